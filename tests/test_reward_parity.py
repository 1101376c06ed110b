"""The Motif reward model against a PyTorch twin with the same weights (skipped without torch: the `parity` extra).

The torch model is the authors' image reward model (Motif's `model.py`, `model_utils.py`, `reward_model.py` as
SENSEI trained it; shared/research/sensei_motif.md section 2): the image divided by 255, Conv(3->16, k8, s4), ELU,
Conv(16->32, k4, s2), ELU, Conv(32->64, k3, s2), ELU, MaxPool 2x2, flatten, Linear(-> H/2), ReLU, Linear(H/2 -> H),
then `reward_fn` = ReLU, Linear(H -> 1). Ours has the same layers; its one difference is the layout: it runs NHWC
(flax) where torch runs NCHW, so the first linear layer's rows are reordered (height, width, channel) -> (channel,
height, width) when copied, which at 224 px (a 6x6 feature map) exercises the flatten order.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from sensei_jax.reward.model import RewardModel, RewardModelConfig, init_params  # noqa: E402


class TorchMotifCNN(nn.Module):
    def __init__(self, channels, hidden, features):
        super().__init__()
        widths = (3, *channels)
        self.encoder = nn.Sequential(
            nn.Conv2d(widths[0], widths[1], 8, stride=4), nn.ELU(),
            nn.Conv2d(widths[1], widths[2], 4, stride=2), nn.ELU(),
            nn.Conv2d(widths[2], widths[3], 3, stride=2), nn.ELU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(features, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, hidden))
        self.reward_fn = nn.Sequential(nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, images_uint8_nhwc):
        x = torch.from_numpy(images_uint8_nhwc).permute(0, 3, 1, 2).float() / 255.0
        return self.reward_fn(self.encoder(x))[:, 0]


def copy_into_torch(params, config):
    """Our parameter tree -> the torch twin's state dict (convs HWIO -> OIHW, linears [in, out] -> [out, in])."""
    model = TorchMotifCNN(config.channels, config.hidden, config.num_features)
    grid, channels = config.feature_grid(), config.channels[-1]
    p = {name: {k: np.asarray(v, np.float32) for k, v in layer.items()} for name, layer in params.items()}
    fc1 = p["fc1"]["kernel"].reshape(grid, grid, channels, -1).transpose(2, 0, 1, 3).reshape(config.num_features, -1)
    state = {
        "encoder.0.weight": p["conv1"]["kernel"].transpose(3, 2, 0, 1), "encoder.0.bias": p["conv1"]["bias"],
        "encoder.2.weight": p["conv2"]["kernel"].transpose(3, 2, 0, 1), "encoder.2.bias": p["conv2"]["bias"],
        "encoder.4.weight": p["conv3"]["kernel"].transpose(3, 2, 0, 1), "encoder.4.bias": p["conv3"]["bias"],
        "encoder.8.weight": fc1.T, "encoder.8.bias": p["fc1"]["bias"],
        "encoder.10.weight": p["fc2"]["kernel"].T, "encoder.10.bias": p["fc2"]["bias"],
        "reward_fn.1.weight": p["head"]["kernel"].T, "reward_fn.1.bias": p["head"]["bias"],
    }
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return model.eval()


def test_reward_matches_the_authors_architecture_in_torch():
    config = RewardModelConfig(image_size=224, channels=(16, 32, 64), hidden=512)  # SENSEI's GPT-4 / LLaVA model
    assert config.num_features == 2304
    rng = np.random.default_rng(0)
    # Orthogonal kernels as Motif initialises them, and nonzero biases (zero ones would hide a misplaced bias).
    params = {name: {k: np.asarray(v) + (rng.normal(0, 0.1, v.shape).astype(np.float32) if k == "bias" else 0)
                     for k, v in layer.items()} for name, layer in init_params(config, 0).items()}
    ours = RewardModel(config, params)
    images = rng.integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    images[0] = 0  # a black frame, and one with structure (not noise only)
    images[1] = np.linspace(0, 255, 224, dtype=np.uint8)[None, :, None]
    with torch.no_grad():
        expected = copy_into_torch(params, config)(images).numpy()
    got = np.asarray(ours.reward(images))
    assert got.dtype == np.float32 and got.shape == (4,)
    assert np.ptp(expected) > 1e-3  # the images get different rewards, so the comparison means something
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
