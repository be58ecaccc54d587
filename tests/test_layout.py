"""The layout's rules, read from the sources' imports (every import, function-level ones too).

- ``jaxnets``, ``torchref``, ``byhand`` (the two sides and the lessons' numpy versions) never
  import each other or ``compare``; jaxnets never imports torch, torchref never JAX, byhand
  neither.
- ``compare``, bottom to top: the base modules (``errors``, ``diff``, ``arrays``, ``files``,
  ``port``, ``optim``), ``toolkit/`` (the lockstep engine and ``check``, for any model: it
  knows no tutorial), ``tutorials/`` (one client of the toolkit), ``parallel/``, ``bench/``,
  then the front (``cli``, ``printing``, the public re-exports). A module imports from its
  own layer or those below it, and the error class from ``compare.errors``.
- No module imports another module's private name (``from m import _x``, or ``m._x``), nor a
  private module of another package (``jaxnets._train`` from ``compare``).
- No import leads back to where it started.

Each rule is first shown to catch what it forbids, on a few lines of source made for it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compare", "jaxnets", "torchref", "byhand")
LAYERS = ("base", "toolkit", "tutorials", "parallel", "bench", "front")  # bottom to top
BASE = {"errors", "diff", "arrays", "files", "port", "optim"}
FRONT = {"__main__", "cli", "printing", "data"}  # compare.data: the public path of its loader
THIRD_PARTY = {  # what a package besides compare must not import
    "jaxnets": {"torch", "torchvision"},
    "torchref": {"jax", "flax", "optax"},
    "byhand": {"jax", "flax", "optax", "torch", "torchvision"},
}


def project():
    """{module name: source} of every module of the project."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path.read_text()
    return modules


def imports(source, known):
    """What ``source`` imports: ``(roots, [(module, private name or None)])``, the top-level
    names of everything it imports, and each import of the project's modules.
    ``from a.b import c`` imports module ``a.b.c`` when there is one, else the name ``c`` of
    ``a.b``; an attribute ``alias._x`` of an imported project module is its private name."""
    roots, found, aliases = set(), [], {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not node.level, "the project imports absolutely"
            roots.add(node.module.split(".")[0])
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in known:
                    found.append((full, None))
                    aliases[alias.asname or alias.name] = full
                else:
                    found.append((node.module, alias.name if alias.name[0] == "_" else None))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                roots.add(alias.name.split(".")[0])
                if alias.name.split(".")[0] in PACKAGES:
                    found.append((alias.name, None))
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and f"{aliases[node.value.id]}.{node.attr}" not in known
        ):
            found.append((aliases[node.value.id], node.attr))
    return roots, found


def layer(name):
    """The layer of ``compare`` module ``name``."""
    parts = name.split(".")
    if len(parts) == 1 or parts[1] in FRONT:
        return "front"
    if parts[1] in BASE:
        return "base"
    assert parts[1] in LAYERS, f"{name}: in no layer; give it one in tests/test_layout.py"
    return parts[1]


def private_owner(name):
    """The package a private module belongs to (``jaxnets`` for ``jaxnets._train``), or None."""
    parts = name.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def violations(modules):
    """Every broken rule in ``modules`` ({name: source}), one line each."""
    known = set(modules)
    found, graph = [], {}
    for name, source in sorted(modules.items()):
        top = name.split(".")[0]
        roots, targets = imports(source, known)
        if top in THIRD_PARTY and roots & THIRD_PARTY[top]:
            found.append(f"{name} imports {sorted(roots & THIRD_PARTY[top])}")
        graph[name] = {target for target, _ in targets if target in known and target != name}
        for target, private in targets:
            target_top = target.split(".")[0]
            if top != "compare" and target_top != top:
                found.append(f"{name} imports {target}: {top} imports no other package")
            if top == "compare" and target == "compare" and name != "compare":
                found.append(f"{name} imports from the package compare: use compare.errors")
            elif top == target_top == "compare":
                if LAYERS.index(layer(target)) > LAYERS.index(layer(name)):
                    found.append(
                        f"{name} ({layer(name)}) imports {target} ({layer(target)}), a layer above"
                    )
            owner = private_owner(target)
            if owner is not None and name != owner and not name.startswith(owner + "."):
                found.append(f"{name} imports {target}, a private module of {owner}")
            if private is not None:
                found.append(f"{name} imports {private}, a private name of {target}")
    found += [f"import circle: {' -> '.join(circle)}" for circle in circles(graph)]
    return found


def circles(graph):
    """Each import circle of ``graph`` ({module: the modules it imports}), once."""
    found, done = [], set()

    def visit(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                circle = path[path.index(nxt) :] + [nxt]
                if frozenset(circle) not in done:
                    done.add(frozenset(circle))
                    found.append(circle)
            elif nxt not in visited:
                visited.add(nxt)
                visit(nxt, path + [nxt])

    visited = set()
    for start in sorted(graph):
        if start not in visited:
            visited.add(start)
            visit(start, [start])
    return found


def test_the_project_keeps_its_layers():
    assert violations(project()) == []


# each rule on made-up modules: (the modules, a fragment of the line it must give)
BROKEN = {
    "the toolkit importing a tutorial": (
        {
            "compare.toolkit.engine": "from compare.tutorials import twins",
            "compare.tutorials.twins": "",
        },
        "compare.toolkit.engine (toolkit) imports compare.tutorials.twins (tutorials)",
    ),
    "the toolkit importing parallel": (
        {"compare.toolkit.check": "import compare.parallel.policy", "compare.parallel.policy": ""},
        "a layer above",
    ),
    "a base module importing the toolkit": (
        {"compare.port": "from compare.toolkit.engine import DTYPES", "compare.toolkit.engine": ""},
        "compare.port (base) imports compare.toolkit.engine (toolkit)",
    ),
    "a private name across modules": (
        {"compare.diff": "", "compare.port": "from compare.diff import _tiny"},
        "compare.port imports _tiny, a private name of compare.diff",
    ),
    "a private attribute of an imported module": (
        {"compare.diff": "", "compare.optim": "from compare import diff\ndiff._tiny"},
        "compare.optim imports _tiny, a private name of compare.diff",
    ),
    "a private module of another package": (
        {"compare.port": "from jaxnets import _train", "jaxnets._train": ""},
        "compare.port imports jaxnets._train, a private module of jaxnets",
    ),
    "the error from the package itself": (
        {"compare": "", "compare.port": "from compare import CompareError"},
        "imports from the package compare",
    ),
    "a side importing the other": (
        {"jaxnets.regression": "from torchref import regression", "torchref.regression": ""},
        "jaxnets imports no other package",
    ),
    "a side importing the other framework": (
        {"torchref.regression": "import jax.numpy as jnp"},
        "torchref.regression imports ['jax']",
    ),
    "a circle": (
        {
            "compare.tutorials.parity": "from compare.tutorials import runs",
            "compare.tutorials.runs": "def f():\n    from compare.tutorials import parity",
        },
        "import circle: compare.tutorials.parity -> compare.tutorials.runs",
    ),
}


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_catches_what_it_forbids(rule):
    modules, fragment = BROKEN[rule]
    found = violations(modules)
    assert any(fragment in line for line in found), found


def test_a_module_in_no_layer_is_named():
    with pytest.raises(AssertionError, match="compare.helpers: in no layer"):
        violations({"compare.helpers": "", "compare.port": "from compare import helpers"})
