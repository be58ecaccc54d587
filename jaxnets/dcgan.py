"""Deep convolutional GAN: transposed convolutions forge 28x28 digits, convolutions judge them.

Lesson F (Wu Maogui, Python深度学习, ch. 8; the layout of PyTorch's DCGAN example, sized for 28x28;
ngf = ndf = 16 here, 64 there; docs/LESSONS.md): ``Generator`` z (100) as a 1x1 image ->
ConvTranspose2d(100, 2 ngf, 7) 7x7 -> BatchNorm2d, ReLU -> ConvTranspose2d(2 ngf, ngf, 4, stride 2,
padding 1) 14x14 -> BatchNorm2d, ReLU -> ConvTranspose2d(ngf, 1, 4, 2, 1) 28x28 -> Tanh;
``Discriminator`` Conv2d(1, ndf, 4, 2, 1) 14x14 -> LeakyReLU(0.2) -> Conv2d(ndf, 2 ndf, 4, 2, 1) 7x7
-> BatchNorm2d, LeakyReLU(0.2) -> Conv2d(2 ndf, 1, 7) 1x1 -> Sigmoid; no biases, as the example.
``BCELoss``, Adam lr 2e-4 betas (0.5, 0.999) for each net, batch 100, images in [-1, 1].
Trained as ``gan``: one G(z) per step, its fakes detached for D's step, then reused for G's.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

# Conv, ConvTranspose: nnx's, with a backward XLA:CPU keeps fast inside a whole-epoch scan
# (jaxnets/_conv.py); on a GPU, lax's own.
from jaxnets.layers import BatchNorm, Conv, ConvTranspose, binary_cross_entropy

leaky_relu = functools.partial(nnx.leaky_relu, negative_slope=0.2)


def conv_transpose(in_features, out_features, k, stride, padding, *, rngs):
    # torch's ConvTranspose2d(k, stride, padding p): the kernel as torch holds it needs
    # transpose_kernel=True, and its padding p is k - 1 - p of zeros on each side here.
    pad = k - 1 - padding
    return ConvTranspose(
        in_features,
        out_features,
        (k, k),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        transpose_kernel=True,
        use_bias=False,
        rngs=rngs,
    )


class Generator(nnx.Module):
    def __init__(self, latent_size=100, ngf=16, *, rngs: nnx.Rngs):
        self.main = nnx.Sequential(
            conv_transpose(latent_size, ngf * 2, 7, 1, 0, rngs=rngs),
            BatchNorm(ngf * 2, rngs=rngs),
            nnx.relu,
            conv_transpose(ngf * 2, ngf, 4, 2, 1, rngs=rngs),
            BatchNorm(ngf, rngs=rngs),
            nnx.relu,
            conv_transpose(ngf, 1, 4, 2, 1, rngs=rngs),
            nnx.tanh,
        )

    def __call__(self, z):
        z = z.reshape(len(z), 1, 1, -1)  # (batch, 1, 1, latent_size): NHWC
        # -> (batch, 7, 7, ngf * 2) -> (batch, 14, 14, ngf) -> (batch, 28, 28, 1)
        return self.main(z)


class Discriminator(nnx.Module):
    def __init__(self, ndf=16, *, rngs: nnx.Rngs):
        # torch's Conv2d pads p on each side (nnx.Conv pads 'SAME' unless told)
        self.main = nnx.Sequential(
            Conv(1, ndf, (4, 4), strides=2, padding=1, use_bias=False, rngs=rngs),
            leaky_relu,
            Conv(ndf, ndf * 2, (4, 4), strides=2, padding=1, use_bias=False, rngs=rngs),
            BatchNorm(ndf * 2, rngs=rngs),
            leaky_relu,
            Conv(ndf * 2, 1, (7, 7), padding="VALID", use_bias=False, rngs=rngs),
            nnx.sigmoid,
        )

    def __call__(self, x):
        # (batch, 28, 28, 1) -> (batch, 14, 14, ndf) -> (batch, 7, 7, ndf * 2) -> (batch, 1, 1, 1)
        return self.main(x).reshape(len(x), 1)  # (batch, 1)


class DCGAN(nnx.Module):
    """``D`` and ``G`` in one module: one state dict holds both."""

    def __init__(self, latent_size=100, ngf=16, ndf=16, *, rngs: nnx.Rngs):
        self.latent_size = latent_size
        self.D = Discriminator(ndf, rngs=rngs)
        self.G = Generator(latent_size, ngf, rngs=rngs)
        self.rngs = rngs  # the key stream of a normal run's z (model state: it advances)


def new_model(hp, rngs):
    return DCGAN(hp.latent_size, hp.ngf, hp.ndf, rngs=rngs)


def new_optimizer(model, hp):
    b1, b2 = hp.betas
    return nnx.Dict(
        {
            "D": nnx.Optimizer(model.D, optax.adam(hp.lr, b1=b1, b2=b2), wrt=nnx.Param),
            "G": nnx.Optimizer(model.G, optax.adam(hp.lr, b1=b1, b2=b2), wrt=nnx.Param),
        }
    )


# torch's BCELoss: each log clamped at -100, and its own backward (jaxnets/layers.py)
criterion = binary_cross_entropy


def new_noise(model, images):
    """A step's randomness, drawn here in a normal run (compare hands one in for lockstep)."""
    shape = (len(images), model.latent_size)
    return {"z": jax.random.normal(model.rngs.noise(), shape, images.dtype)}


def d_loss_fn(D, images, fake_images):
    real_labels = jnp.ones((len(images), 1), images.dtype)
    fake_labels = jnp.zeros((len(fake_images), 1), images.dtype)
    return criterion(D(images), real_labels) + criterion(D(fake_images), fake_labels)


def g_loss_fn(D, fake_images):
    real_labels = jnp.ones((len(fake_images), 1), fake_images.dtype)
    return criterion(D(fake_images), real_labels)  # fakes labelled real


def loss_fn(model, x, y, noise=None):
    """Both losses of one step at the current weights, summed (parity's tiers 1 and 2)."""
    fake_images = model.G((noise or new_noise(model, x))["z"])
    return d_loss_fn(model.D, x, jax.lax.stop_gradient(fake_images)) + g_loss_fn(
        model.D, fake_images
    )


@nnx.jit
def train_step(model, optimizer, images, labels, noise=None):
    noise = noise or new_noise(model, images)
    # G's one forward of the step, its backward kept for later: what torch keeps in the graph
    # of fake_images. (Running G(z) again for G's gradient, as gan.py does, would move
    # BatchNorm's running statistics twice per step.)
    fake_images, g_backward = nnx.vjp(
        lambda G: G(noise["z"]), model.G, graph_updates=False
    )  # (batch, 28, 28, 1)

    # Discriminator: real images are 1, fakes 0; stop_gradient cuts what torch's detach() cuts.
    d_loss, grads = nnx.value_and_grad(d_loss_fn)(
        model.D, images, jax.lax.stop_gradient(fake_images)
    )
    optimizer["D"].update(model.D, grads)

    # Generator: the same fakes, judged by the updated D, should pass for real; the gradient
    # with respect to the fakes goes on through G's kept backward.
    g_loss, fake_grads = nnx.value_and_grad(g_loss_fn, argnums=1)(model.D, fake_images)
    (grads,) = g_backward(fake_grads)
    optimizer["G"].update(model.G, nnx.state(grads, nnx.Param))
    return jnp.stack([d_loss, g_loss])  # (2,): D, G


@nnx.jit
def predict(model, noise):
    """Digits forged from ``noise["z"]`` (in eval mode: BatchNorm's running statistics)."""
    return model.G(noise["z"])  # (n, 28, 28, 1) in [-1, 1]
