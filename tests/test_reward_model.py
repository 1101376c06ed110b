"""The Motif CNN, the jittable RewardModel.reward and the Bradley-Terry loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sensei_jax.reward.model import RewardModel, RewardModelConfig, abstract_params, apply, init_params, resize
from sensei_jax.reward.train import preference_loss

SMALL = RewardModelConfig(image_size=64, channels=(4, 8, 8), hidden=16)


@pytest.fixture(scope="module")
def model():
    return RewardModel(SMALL, init_params(SMALL, 0), mean=jnp.float32(0.5), std=jnp.float32(2.0))


def test_architecture_sizes():
    sensei = RewardModelConfig(image_size=224, channels=(16, 32, 64), hidden=512)
    assert sensei.feature_grid() == 6 and sensei.num_features == 2304  # 224 -> 55 -> 26 -> 12 -> pool 6
    params = abstract_params(sensei)
    assert params["conv1"]["kernel"].shape == (8, 8, 3, 16)
    assert params["fc1"]["kernel"].shape == (2304, 256) and params["fc2"]["kernel"].shape == (256, 512)
    assert params["head"]["kernel"].shape == (512, 1)
    out = jax.eval_shape(lambda p, x: apply(sensei, p, x), params, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.uint8))
    assert out.shape == (2,) and out.dtype == jnp.float32
    assert RewardModelConfig(image_size=64).num_features == 64
    with pytest.raises(ValueError, match="too small"):
        RewardModelConfig(image_size=40)


def test_orthogonal_init_zero_bias():
    params = init_params(SMALL, 1)
    kernel = np.asarray(params["fc2"]["kernel"])  # [8, 16]: orthonormal rows
    np.testing.assert_allclose(kernel @ kernel.T, np.eye(8), atol=1e-5)
    assert not np.any(np.asarray(params["conv1"]["bias"]))
    conv = np.asarray(params["conv2"]["kernel"]).reshape(-1, 8)  # [4*4*4, 8]: orthonormal columns
    np.testing.assert_allclose(conv.T @ conv, np.eye(8), atol=1e-5)
    assert not np.allclose(np.asarray(init_params(SMALL, 2)["fc2"]["kernel"]), kernel)  # seeded


def test_reward_batched_resized_and_jittable(model):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 3, 64, 64, 3), dtype=np.uint8)
    rewards = jax.jit(lambda m, x: m.reward(x))(model, images)
    assert rewards.shape == (2, 3) and rewards.dtype == jnp.float32
    flat = jax.jit(lambda p, x: apply(SMALL, p, x))
    np.testing.assert_allclose(rewards.reshape(-1), flat(model.params, images.reshape(6, 64, 64, 3)),
                               rtol=1e-5, atol=1e-6)
    # Passed as a pytree argument or closed over inside jit: same numbers.
    as_argument = jax.jit(lambda m, x: m.reward(x, normalize=True))(model, images)
    closed_over = jax.jit(lambda x: model.reward(x, normalize=True))(images)
    np.testing.assert_allclose(as_argument, (rewards - 0.5) / 2.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(closed_over, as_argument, rtol=1e-5, atol=1e-6)
    # Other resolutions are resized inside the model.
    big = rng.integers(0, 256, size=(4, 96, 96, 3), dtype=np.uint8)
    expected = flat(model.params, np.asarray(jax.jit(resize, static_argnums=1)(jnp.asarray(big), 64)))
    np.testing.assert_allclose(jax.jit(model.reward)(big), expected, rtol=1e-4, atol=1e-5)
    assert jax.eval_shape(model.reward, images[0, 0]).shape == ()


def test_reward_rejects_bad_inputs(model):
    with pytest.raises(TypeError, match="uint8"):
        model.reward(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 3\]"):
        model.reward(np.zeros((2, 64, 64, 4), np.uint8))
    bare = RewardModel(SMALL, model.params)
    with pytest.raises(ValueError, match="statistics"):
        bare.reward(np.zeros((1, 64, 64, 3), np.uint8), normalize=True)


def test_preference_loss_soft_labels_ties_and_unknowns():
    rewards = jnp.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [5.0, -5.0], [0.0, 9.0]])
    labels = jnp.array([0, 1, 2, 3, 0])
    mask = jnp.array([True, True, True, True, False])  # the last row is padding
    sums = jax.jit(preference_loss)(rewards, labels, mask)
    assert float(sums["count"]) == 3  # unknown and padding dropped
    assert float(sums["decided"]) == 2 and float(sums["correct"]) == 2
    expected = 2 * np.log1p(np.exp(-2.0)) + np.log(2.0)  # two confident correct pairs + a tie at equal rewards
    np.testing.assert_allclose(float(sums["loss"]), expected, rtol=1e-5)
    # A tie is a soft 0.5 target: no gradient when both rewards agree, and it pulls unequal rewards together.
    loss_grad = jax.jit(jax.value_and_grad(lambda r, y: preference_loss(r, y, jnp.ones(len(y), bool))["loss"]))
    _, grad = loss_grad(jnp.array([[1.0, 1.0]]), jnp.array([2]))
    np.testing.assert_allclose(grad, 0.0, atol=1e-7)
    _, grad = loss_grad(jnp.array([[3.0, 1.0]]), jnp.array([2]))
    assert grad[0, 0] > 0 > grad[0, 1]
    # An unknown label contributes nothing, whatever the rewards.
    loss, grad = loss_grad(jnp.array([[9.0, -9.0]]), jnp.array([3]))
    assert float(loss) == 0.0 and not np.any(np.asarray(grad))
    # A wrong confident prediction costs more than a right one, and its gradient pushes the preferred one up.
    loss, grad = loss_grad(jnp.array([[0.0, 2.0]]), jnp.array([0]))
    assert float(loss) > 2.0 and grad[0, 0] < 0 < grad[0, 1]


def test_bad_config_and_missing_model_raise(tmp_path):
    from sensei_jax import config as config_lib

    with pytest.raises(config_lib.ConfigError, match="val_fraction"):
        config_lib.load(overrides={"reward": {"val_fraction": 1.5}})
    with pytest.raises(config_lib.ConfigError, match="reward.channels"):
        config_lib.load(overrides={"reward": {"channels": [8, 16]}})
    with pytest.raises(FileNotFoundError, match="model.json"):
        RewardModel.load(tmp_path)
    (tmp_path / "model.json").write_text('{"model": {"image_size": 64, "width": 3}}')
    with pytest.raises(ValueError, match="model.json"):
        RewardModel.load(tmp_path)
    (tmp_path / "model.json").write_text('{"model": {"image_size": 64, "channels": [4, 8, 8], "hidden": 16}}')
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        RewardModel.load(tmp_path)
