"""The privileged-state oracle: SENSEI's heuristic on simulator states restored in Robodesk."""

import jax.numpy as jnp
import numpy as np
import pytest

from sensei_jax.annotators.oracle import OracleAnnotator
from sensei_jax.envs.robodesk.config import InterestConfig
from sensei_jax.envs.robodesk.interest import STACK_OFFSET


@pytest.fixture(scope="module")
def env():
    robodesk = pytest.importorskip("sensei_jax.envs.robodesk")
    return robodesk.Robodesk(render_images=False)


def test_oracle_on_restored_states(env):
    m = env.mj_model
    base = np.zeros(env.physics_state_size, np.float32)
    base[: m.nq] = env.qpos0

    def variant(qpos=None, qvel=None):
        state = base.copy()
        for index, value in (qpos or {}).items():
            state[index] = value
        for index, value in (qvel or {}).items():
            state[m.nq + index] = value
        return state

    oracle = OracleAnnotator(InterestConfig(), env, batch=8)
    ee = np.asarray(env.scene(env.restore(jnp.asarray(base[None]))).end_effector[0])
    ball, upright, flat = (int(env.object_qadr[o]) for o in ("ball", "upright_block", "flat_block"))
    stacked_at = base[flat:flat + 3] + np.asarray(STACK_OFFSET, np.float32)
    states = {
        "base": base,
        "drawer_open": variant({env.drawer_qadr: -0.25}),
        "ball_moving": variant(qvel={int(env.interaction_dofs["ball"][0]): 0.5}),
        "stacked": variant({upright + i: stacked_at[i] for i in range(3)}),
        "near_ball": variant({ball + i: ee[i] + (0.0, 0.0, 0.06)[i] for i in range(3)}),
    }
    names = list(states)
    decoded = oracle.decode(np.stack([states[n] for n in names]))
    assert decoded["drawer_qpos"][1] == pytest.approx(-0.25, abs=1e-4)
    assert decoded["interaction"][2].any()
    assert decoded["stack_error"][3] < 0.01
    scores = dict(zip(names, oracle.scores(np.stack([states[n] for n in names]))))
    assert all(scores[n] > scores["base"] + 1.0 for n in names[1:]), scores

    pairs = np.stack([[states["base"], states["drawer_open"]], [states["ball_moving"], states["base"]],
                      [states["base"], states["base"]], [states["stacked"], states["base"]],
                      [states["base"], states["near_ball"]]])
    images = np.zeros((len(pairs), 2, 8, 8, 3), np.uint8)  # the oracle never looks at pixels
    prob, label = oracle.annotate(images, pairs)
    assert label.tolist() == [1, 0, 2, 0, 1]
    assert prob.dtype == np.float32 and prob[1] > 0.9 and prob[0] < 0.1
    with pytest.raises(ValueError, match="states"):
        oracle.annotate(images, None)
