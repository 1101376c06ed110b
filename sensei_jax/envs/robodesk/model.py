"""The Robodesk scene as an MJCF written for this project, and the facts the env reads from it.

Geometry, masses, joint ranges, actuators, lights and materials follow Robodesk 1.0.0 (Kannan et al. 2021); see
docs/robodesk.md for every deviation. The ones that matter for simulation:
- the finger collision margin is 0 (MJX-Warp rejects a margin on box-mesh pairs; Robodesk used 1 mm);
- contact and constraint budgets are set explicitly by the env (per world), not by `<size>`;
- Newton solver iterations are limited (default 20 / line search 10, the reference's are 100 / 50): MJX-Warp on a
  CPU launches the solver's kernels once per iteration from Python;
- the three cameras are real MJCF cameras, because the Warp batch renderer renders model cameras only. `top`
  reproduces Robodesk's free camera plus its crop-and-squeeze as camera intrinsics, `right` is SENSEI's view and
  `left` its mirror image.
"""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np

ROBOT_JOINTS = tuple(f"panda0_joint{i}" for i in range(1, 8)) + ("panda0_finger_joint1", "panda0_finger_joint2")
OBJECTS = ("ball", "upright_block", "flat_block")
BUTTON_COLORS = ("red", "green", "blue")
CAMERAS = ("top", "right", "left")

# Robodesk's initial robot pose and the reset noise scale (times the actuator ctrlrange).
INIT_ROBOT_QPOS = (-0.30, -0.4, 0.28, -2.5, 0.13, 1.87, 0.91, 0.01, 0.01)
ROBOT_RESET_NOISE = 0.15


def _free_camera(lookat, distance, azimuth_deg, elevation_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position and x/y axes of MuJoCo's free camera (lookat, distance, azimuth, elevation) as a fixed camera."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    forward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    position = np.asarray(lookat, dtype=np.float64) - distance * forward
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return position, right, up


def _camera_xml(name: str, lookat, distance, azimuth, elevation, intrinsics: str = 'fovy="45"') -> str:
    pos, x_axis, y_axis = _free_camera(lookat, distance, azimuth, elevation)
    f = lambda v: " ".join(f"{c:.6f}" for c in v)  # noqa: E731
    return f'<camera name="{name}" mode="fixed" pos="{f(pos)}" xyaxes="{f(x_axis)} {f(y_axis)}" {intrinsics}/>'


# Robodesk renders its free camera (fovy 45) at 120x120, crops PIL box (17, 25, 105, 89) = 88x64 px and resizes that
# to a square, squeezing x by 64/88. As a pinhole camera on a 64-unit sensor: fx = 60/tan(22.5deg)*64/88,
# fy = 60/tan(22.5deg), and the optical axis lands at pixel (31.27, 35.0) instead of the centre (32, 32).
_F120 = 60.0 / math.tan(math.radians(22.5))
_TOP_INTRINSICS = (f'sensorsize="64 64" focal="{_F120 * 64 / 88:.4f} {_F120:.4f}" '
                   f'principal="{32 - (60 - 17) * 64 / 88:.4f} {32 - (60 - 25):.4f}"')


def mjcf(assets_dir: Path) -> str:
    """The scene's MJCF text; mesh and texture files are read from `assets_dir` (meshes/, textures/)."""
    top = _camera_xml("top", (0.0, 0.535, 1.1), 1.8, 90.0, -60.0, _TOP_INTRINSICS)
    right = _camera_xml("right", (-0.136, 0.535, 0.645), 1.55, 180.0, -18.0)
    left = _camera_xml("left", (0.136, 0.535, 0.645), 1.55, 0.0, -18.0)

    finger_capsules = [  # (radius, x0 y0 z0, x1 y1 z1) in the left finger's frame; the right finger mirrors y.
        (0.0070, (.009, .006, .0875), (-.009, .009, .0875)), (0.0070, (.009, .009, .0875), (-.009, .006, .0875)),
        (0.0075, (.009, .007, .0775), (-.009, .010, .0775)), (0.0075, (.009, .010, .0775), (-.009, .007, .0775)),
        (0.0082, (.009, .008, .0675), (-.009, .011, .0675)), (0.0082, (.009, .011, .0675), (-.009, .008, .0675)),
        (0.0090, (.009, .009, .0575), (-.009, .012, .0575)), (0.0090, (.009, .012, .0575), (-.009, .009, .0575)),
        (0.0100, (.009, .0105, .0475), (-.009, .0135, .0475)), (0.0100, (.009, .0135, .0475), (-.009, .0105, .0475)),
        (0.0110, (.009, .012, .035), (-.009, .015, .035)), (0.0110, (.009, .015, .035), (-.009, .012, .035)),
    ]

    def finger(side: str, sign: float) -> str:
        name = "panda0_leftfinger" if sign > 0 else "panda0_rightfinger"
        joint = "panda0_finger_joint1" if sign > 0 else "panda0_finger_joint2"
        inertial_quat = "0.705868 0.0310348 -0.0314925 0.706962" if sign > 0 else \
            "0.705868 -0.0310348 0.0314925 0.706962"
        capsules = "\n".join(
            f'          <geom class="finger_col" type="capsule" size="{r}" fromto="{a[0]} {sign * a[1]:.4f} {a[2]} '
            f'{b[0]} {sign * b[1]:.4f} {b[2]}"/>' for r, a, b in finger_capsules)
        viz_quat = '' if sign > 0 else ' quat="0 0 0 1"'
        return f"""
        <body name="{name}" pos="0 0 0.1654" quat="0.92388 0 0 -0.382683">
          <inertial pos="{sign * 1.57863e-05:.8f} {sign * 0.0118731:.7f} 0.0434103" quat="{inertial_quat}"
                    mass="0.0927059" diaginertia="6.57134e-05 6.09611e-05 1.09932e-05"/>
          <joint name="{joint}" class="finger" axis="0 {sign:.0f} 0"/>
          <geom class="viz" mesh="finger_viz"{viz_quat}/>
{capsules}
          <geom class="finger_col" type="box" size="0.0185 0.0120 0.0175" pos="0 {sign * 0.014:.3f} 0.015"
                euler="{sign * 0.03:.2f} 0 0"/>
        </body>"""

    def link(i: int, body_attrs: str, joint_class: str, joint_range: str, mass: float, inner: str) -> str:
        return f"""
    <body name="panda0_link{i}" {body_attrs}>
      <joint name="panda0_joint{i}" class="{joint_class}" range="{joint_range}"/>
      <geom class="viz" mesh="link{i}_viz"/>
      <geom class="arm_col" mesh="link{i}_col" mass="{mass}"/>{inner}
    </body>"""

    hand = f"""
      <geom class="viz" mesh="hand_viz" pos="0 0 0.107" quat="0.92388 0 0 -0.382683"/>
      <geom class="arm_col" mesh="hand_col" pos="0 0 0.107" quat="0.92388 0 0 -0.382683" mass="0.81909"/>
      <site name="end_effector" pos="0 0 0.210" size="0.01" euler="0 0 -0.785398"/>{finger("left", 1.0)}{finger("right", -1.0)}"""
    arm = link(7, 'pos="0.088 0 0" euler="1.57 0 0.7854"', "forearm", "-2.8973 2.8973", 0.2, hand)
    arm = link(6, 'pos="0 0 0" euler="1.57 0 1.57"', "forearm", "-1.6573 2.1127", 1.3235, arm)
    arm = link(5, 'pos="-0.0825 0.384 0" quat="0.707107 -0.707107 0 0"', "forearm", "-2.8973 2.8973", 3.00049, arm)
    arm = link(4, 'pos="0.0825 0 0" quat="0.707107 0.707107 0 0"', "arm", "-3.0718 -0.4", 2.08129, arm)
    arm = link(3, 'pos="0 -0.316 0" quat="0.707107 0.707107 0 0"', "arm", "-2.8973 2.8973", 2.04104, arm)
    arm = link(2, 'pos="0 0 0" quat="0.707107 -0.707107 0 0"', "arm", "-1.7628 1.7628", 2.73046, arm)
    arm = link(1, 'pos="0 0 0.333"', "arm", "-2.8973 2.8973", 2.7063, arm)

    def button(color: str, x: float, rgb: str) -> str:
        return f"""
      <body name="{color}_button" pos="{x} 0 0">
        <geom class="metal_viz" type="cylinder" size=".035 .01"/>
        <body>
          <geom type="cylinder" size=".03 .01" pos="0 0 .02" rgba="{rgb} 1" group="1" mass="0.01"/>
          <joint name="{color}_button" class="push" axis="0 0 1" damping="1" stiffness="10"/>
        </body>
      </body>"""

    def light(color: str, x: float, rgb: str) -> str:
        return f"""
      <body name="{color}_light" pos="{x} .15 0">
        <geom type="mesh" mesh="lights_holder" euler="-1.57 0 3.14" group="1" contype="0" conaffinity="0"/>
        <geom type="cylinder" size=".06 .001" pos="0 0 .011" rgba="0 0 0 1" group="1" contype="0" conaffinity="0"/>
        <geom class="hidden_col" type="cylinder" size=".08 .02" pos="0 0 .011"/>
        <body>
          <geom type="cylinder" size=".06 .0075" rgba="{rgb} .4" group="1" contype="0" conaffinity="0" mass="0.01"/>
          <joint name="{color}_light" class="push" axis="0 0 -1"/>
        </body>
      </body>"""

    buttons = button("red", -.2, "1 0 0") + button("green", 0, "0 1 0") + button("blue", .2, "0 0 1")
    lights = light("red", -.2, "1 0 0") + light("green", 0, "0 1 0") + light("blue", .2, "0 0 1")
    franka_meshes = "\n".join(
        [f'    <mesh name="link{i}_{kind}" file="meshes/franka/{"visual" if kind == "viz" else "collision"}_link{i}.stl"/>'
         for i in range(8) for kind in ("viz", "col")]
        + ['    <mesh name="hand_viz" file="meshes/franka/visual_hand.stl"/>',
           '    <mesh name="hand_col" file="meshes/franka/collision_hand.stl"/>',
           '    <mesh name="finger_viz" file="meshes/franka/visual_finger.stl" scale="1.75 1.0 1.75"/>'])
    desk_boxes = [  # size, pos of the static collision boxes of the desk body (group 4, hidden)
        (".6 .275 .025", "0 0 0.735"), ("0.17 0.26 .05", "0.42 0 0.66"), ("0.17 0.26 .05", "-0.42 0 0.66"),
        ("0.025 0.025 0.305", "-0.565 0.235 0.305"), ("0.025 0.025 0.305", "-0.565 -0.235 0.305"),
        ("0.025 0.025 0.305", "0.565 0.235 0.305"), ("0.025 0.025 0.305", "0.565 -0.235 0.305"),
        ("0.6 0.01 0.175", "0 0.265 0.935"), ("0.6 0.11 0.01", "0 0.165 1.1"), ("0.01 0.11 0.175", "0.59 .165 .935"),
        ("0.01 0.11 0.175", "-0.59 .165 .935"), ("0.01 0.11 0.175", "0 .165 .935")]
    table_mass = ' mass="40"'
    desk_geoms = "\n".join(
        f'        <geom class="hidden_col" type="box" size="{s}" pos="{p}"{table_mass if i == 0 else ""}/>'
        for i, (s, p) in enumerate(desk_boxes))
    bin_walls = [("-.12 0 .2", "0 -0.0872665 0"), (".12 0 .2", "0 0.0872665 0"), ("0 -.12 .2", "0.0872665 0 1.57"),
                 ("0 .12 .2", "-0.0872665 0 1.57")]
    bin_geoms = "\n".join(f'      <geom class="solid_col" type="box" pos="{p}" size=".01 .11 .2" euler="{e}"/>'
                          for p, e in bin_walls)

    return f"""<mujoco model="sensei_robodesk">
  <compiler angle="radian" meshdir="{assets_dir}" texturedir="{assets_dir}/textures" autolimits="true"/>
  <option timestep="0.002" iterations="20" ls_iterations="10"/>
  <visual>
    <headlight ambient=".1 .1 .1" diffuse=".4 .4 .4" specular=".5 .5 .5"/>
    <map znear="0.1"/>
  </visual>
  <asset>
    <texture name="marble" type="2d" file="white_marble_tile.png"/>
    <material name="floor" texture="marble" texrepeat="4 4" texuniform="true" reflectance="0.05"/>
    <texture name="metal" type="cube" file="metal.png"/>
    <material name="metal" texture="metal" texrepeat="3 3" reflectance="0.7"/>
    <texture name="wood" type="cube" file="wood.png"/>
    <material name="wood" texture="wood" rgba="0.8 0.8 0.8 1" shininess="0.2" reflectance="0.3"/>
    <mesh name="bin" file="meshes/bin.stl" scale="0.01 0.01 0.01"/>
    <mesh name="button_holder" file="meshes/button_holder.stl" scale="0.01 0.01 0.01"/>
    <mesh name="lights_holder" file="meshes/button_holder.stl" scale="0.02 0.01 0.02"/>
    <mesh name="desk_main" file="meshes/desk_main.stl" scale="0.01 0.01 0.01"/>
    <mesh name="desk_slide_wood" file="meshes/desk_slide_wood.stl" scale="0.01 0.01 0.01"/>
    <mesh name="desk_slide_handle" file="meshes/desk_slide_handle.stl" scale="0.01 0.01 0.01"/>
    <mesh name="desk_drawer_wood" file="meshes/desk_drawer_wood.stl" scale="0.01 0.01 0.01"/>
    <mesh name="desk_drawer_handle" file="meshes/desk_drawer_handle.stl" scale="0.01 0.01 0.01"/>
{franka_meshes}
  </asset>
  <default>
    <default class="viz">
      <geom type="mesh" group="0" contype="0" conaffinity="0" rgba=".95 .99 .92 1" mass="0"/>
    </default>
    <default class="arm_col">
      <geom type="mesh" group="3" contype="1" conaffinity="1" rgba=".5 .6 .7 1"/>
    </default>
    <default class="finger_col">
      <geom group="3" contype="1" conaffinity="0" condim="6" friction="1 0.5 0.0001" solref="0.01 1"
            solimp="0.8 0.9 0.001" margin="0" rgba="0.5 0.6 0.7 .4"/>
    </default>
    <default class="arm">
      <joint axis="0 0 1" damping="100"/>
    </default>
    <default class="forearm">
      <joint axis="0 0 1" damping="10"/>
    </default>
    <default class="finger">
      <joint type="slide" range="0 0.04" damping="100" armature="5"/>
    </default>
    <default class="metal_viz">
      <geom group="1" contype="0" conaffinity="0" material="metal"/>
    </default>
    <default class="wood_viz">
      <geom type="mesh" group="1" contype="0" conaffinity="0" material="wood"/>
    </default>
    <default class="hidden_col">
      <geom group="4" contype="1" conaffinity="1" rgba="0.8 0.9 0.7 1"/>
    </default>
    <default class="solid_col">
      <geom group="3" contype="1" conaffinity="1" rgba="0.8 0.9 0.7 1"/>
    </default>
    <default class="sliding">
      <joint type="slide" damping="2" frictionloss="5" armature="0.1"/>
    </default>
    <default class="push">
      <joint type="slide" range="-0.005 0"/>
    </default>
    <position forcelimited="true" ctrllimited="true"/>
  </default>

  <worldbody>
    {top}
    {right}
    {left}
    <light directional="true" diffuse=".3 .3 .3" specular=".3 .3 .3" pos="-1 -1 1" dir="1 1 -1"/>
    <light directional="true" diffuse=".3 .3 .3" specular=".3 .3 .3" pos="1 -1 1" dir="-1 1 -1"/>
    <light directional="true" diffuse=".3 .3 .3" specular=".3 .3 .3" pos="0 1 1" dir="0 -1 -1"/>
    <geom name="floor" type="plane" size="5 5 .1" material="floor" condim="3"/>

    <body name="panda0_link0" pos="0 0.1 0.55" euler="0 0 1.57">
      <geom class="viz" mesh="link0_viz"/>
      <geom class="arm_col" mesh="link0_col" mass="2.91242"/>{arm}
    </body>

    <body name="bin" pos="0.4 0.55 0">
      <geom type="mesh" mesh="bin" material="metal" rgba="0 1 1 1" euler="-1.57 0 3.14" group="1" contype="0"
            conaffinity="0"/>
{bin_geoms}
      <geom class="solid_col" type="box" pos="0 0 .05" size=".1 .1 .005"/>
    </body>

    <body pos="0 0.85 0">
      <body name="desk">
        <geom class="wood_viz" mesh="desk_main" euler="-1.57 0 3.14" rgba="2 2 2 1"/>
{desk_geoms}
      </body>
      <body name="drawer" pos="0 0 0.655">
        <joint name="drawer_joint" class="sliding" axis="0 1 0" range="-0.48 0"/>
        <geom class="wood_viz" mesh="desk_drawer_wood" euler="-1.57 0 3.14" rgba="0.4 0.4 0.4 1"/>
        <geom name="drawer_handle" class="metal_viz" type="mesh" mesh="desk_drawer_handle" euler="-1.57 0 3.14"/>
        <geom class="solid_col" type="box" size=".24 .26 .01" pos="0 0 -0.04" mass="2"/>
        <geom class="solid_col" type="box" size=".24 .01 .05" pos="0 .25 0"/>
        <geom class="solid_col" type="box" size=".24 .01 .05" pos="0 -.25 0"/>
        <geom class="solid_col" type="box" size=".01 .26 .05" pos="-.23 0 0"/>
        <geom class="solid_col" type="box" size=".01 .26 .05" pos=".23 0 0"/>
        <geom class="solid_col" type="capsule" size=".014 .045" pos=".08203 -.315 .01" euler="1.57 0 0"/>
        <geom class="solid_col" type="capsule" size=".014 .045" pos="-.08203 -.315 .01" euler="1.57 0 0"/>
        <geom class="solid_col" type="capsule" size=".014 .08" pos="0 -.36 .01" euler="0 1.57 0"/>
      </body>
      <body name="slide" pos="-0.3 0.04 0.935">
        <joint name="slide_joint" class="sliding" axis="1 0 0" range="0 .6"/>
        <geom class="wood_viz" mesh="desk_slide_wood" euler="-1.57 0 3.14" rgba="0.4 0.4 0.4 1"/>
        <geom name="desk_slide_handle" class="metal_viz" type="mesh" mesh="desk_slide_handle" euler="-1.57 0 3.14"/>
        <geom class="solid_col" type="box" size=".3 .01 .175" mass="1"/>
        <geom class="solid_col" type="capsule" size=".014 .042" pos="0 -.065 .08302" euler="1.57 0 0"/>
        <geom class="solid_col" type="capsule" size=".014 .042" pos="0 -.065 -.08302" euler="1.57 0 0"/>
        <geom class="solid_col" type="capsule" size=".014 .08" pos="0 -.11 0"/>
        <site name="slide_handle" type="sphere" size=".01" pos="0 -.11 0"/>
      </body>
    </body>

    <body pos="-.25 0.625 .76">{buttons}
    </body>
    <body pos="-.25 0.85 1.1">{lights}
    </body>

    <body name="ball" pos="-0.4 0.7 0.799" euler="0 1.57 0">
      <freejoint name="ball"/>
      <geom type="sphere" size=".04" rgba="1 0 0.35 1"/>
    </body>
    <body name="upright_block" pos="0.15 0.78 0.84978449">
      <freejoint name="upright_block"/>
      <geom type="box" size=".023 .023 .09" rgba="0.7 0.9 0.9 1"/>
    </body>
    <body name="flat_block" pos="0.15 0.63 0.77478449">
      <freejoint name="flat_block"/>
      <geom type="box" size=".08 .035 .015" rgba="0.61 1 0.71 1"/>
    </body>
  </worldbody>

  <equality>
    <joint joint1="red_button" joint2="red_light" polycoef="0 1 0 0 0"/>
    <joint joint1="green_button" joint2="green_light" polycoef="0 1 0 0 0"/>
    <joint joint1="blue_button" joint2="blue_light" polycoef="0 1 0 0 0"/>
  </equality>

  <actuator>
    <position name="panda0_joint1" joint="panda0_joint1" kp="870" forcerange="-87 87" ctrlrange="-2.9671 2.9671"/>
    <position name="panda0_joint2" joint="panda0_joint2" kp="870" forcerange="-87 87" ctrlrange="-1.8326 1.8326"/>
    <position name="panda0_joint3" joint="panda0_joint3" kp="870" forcerange="-87 87" ctrlrange="-2.9671 2.9671"/>
    <position name="panda0_joint4" joint="panda0_joint4" kp="870" forcerange="-87 87" ctrlrange="-3.1416 0.0"/>
    <position name="panda0_joint5" joint="panda0_joint5" kp="120" forcerange="-12 12" ctrlrange="-2.9671 2.9671"/>
    <position name="panda0_joint6" joint="panda0_joint6" kp="120" forcerange="-12 12" ctrlrange="-3.7525 2.1817"/>
    <position name="panda0_joint7" joint="panda0_joint7" kp="120" forcerange="-12 12" ctrlrange="-2.9671 2.9671"/>
    <position name="r_gripper_finger_joint" joint="panda0_finger_joint1" kp="500" forcerange="-70 70"
              ctrlrange="0 0.04"/>
    <position name="l_gripper_finger_joint" joint="panda0_finger_joint2" kp="500" forcerange="-70 70"
              ctrlrange="0 0.04"/>
  </actuator>
</mujoco>
"""


def load_model(assets_dir: str | Path, solver_iterations: int = 20, ls_iterations: int = 10) -> mujoco.MjModel:
    """Compiles the scene (a fresh MjModel each call) with the given Newton solver iteration limits."""
    m = mujoco.MjModel.from_xml_string(mjcf(Path(assets_dir)))
    m.opt.iterations = solver_iterations
    m.opt.ls_iterations = ls_iterations
    return m
