"""``arm``: a Franka Panda in pybullet (``pybullet_data`` ships its URDF) with Bridge-style
7-D continuous actions, rendered from a fixed camera with the CPU TinyRenderer.

Action (float32, one per agent step at 10 Hz)::

    [dx, dy, dz, droll, dpitch, dyaw, gripper]
     dx..dz       in [-1, 1] -> end-effector target moves by up to POS_STEP_M per axis
     droll..dyaw  in [-1, 1] -> target orientation turns by up to ROT_STEP_RAD per axis
     gripper      in [0, 1]  -> finger opening (1 = open, 0 = closed), absolute

The target is clamped to a box over the floor in front of the robot (WORKSPACE) and to
within MAX_TILT_RAD of pointing straight down, so random actions stay in view and never
fold the arm through itself. Inverse kinematics (pybullet's damped least squares) turns the
target into joint targets; position control runs SUBSTEPS physics steps at 240 Hz per
agent step. A 5 cm cube is placed by the episode seed; reward is 1.0 while it is lifted
more than LIFT_M off the floor, else 0; episodes never end early (done is only set by the
step limit). Shadows are off (speed); the camera is fixed (one view of the whole scene).
"""

from __future__ import annotations

import math

import numpy as np

from worldmill.rollouts.registry import ActionSpace, cannot_start, missing

FPS = 10.0  # agent steps per second (Bridge's WidowX data is 5 Hz; Panda control 10 Hz)
SIM_HZ = 240
SUBSTEPS = int(SIM_HZ / FPS)
POS_STEP_M = 0.02  # metres per step at |action| = 1
ROT_STEP_RAD = 0.05
MAX_TILT_RAD = 0.5  # roll/pitch away from "gripper pointing down"
WORKSPACE = ((0.3, 0.7), (-0.25, 0.25), (0.03, 0.45))  # x, y, z metres (robot base frame)
LIFT_M = 0.06
CUBE_SIDE_M = 0.05
EE_LINK = 11  # panda_grasptarget
ARM_JOINTS = tuple(range(7))
FINGERS = (9, 10)
REST = (0.0, -0.4, 0.0, -2.2, 0.0, 1.9, 0.785)  # joint angles (rad), gripper over the cube area
# Fixed camera: in front of and above the robot, looking at the workspace centre.
CAMERA = {"target": (0.35, 0.0, 0.3), "distance": 1.3, "yaw": 50.0, "pitch": -30.0, "fov": 50.0}

ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


class PandaArm:
    fps = FPS
    distinct_actions = None  # continuous
    action_space = ActionSpace(
        "continuous",
        low=(-1.0,) * 6 + (0.0,),
        high=(1.0,) * 7,
        names=ACTION_NAMES,
    )

    def __init__(self, size: int):
        import pybullet
        import pybullet_data
        from pybullet_utils import bullet_client

        self.size = size
        self._pb = pybullet
        self._c = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        self._c.setAdditionalSearchPath(pybullet_data.getDataPath())
        c = self._c
        self._view = c.computeViewMatrixFromYawPitchRoll(
            CAMERA["target"], CAMERA["distance"], CAMERA["yaw"], CAMERA["pitch"], 0.0, 2
        )
        self._proj = c.computeProjectionMatrixFOV(CAMERA["fov"], 1.0, 0.05, 5.0)

    def _build(self, rng: np.random.Generator) -> None:
        c = self._c
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(1.0 / SIM_HZ)
        c.loadURDF("plane.urdf")
        self._robot = c.loadURDF("franka_panda/panda.urdf", [0, 0, 0], useFixedBase=True)
        for j, q in zip(ARM_JOINTS, REST, strict=True):
            c.resetJointState(self._robot, j, q)
        for j in FINGERS:
            c.resetJointState(self._robot, j, 0.04)
        xy = [rng.uniform(0.4, 0.6), rng.uniform(-0.15, 0.15)]
        self._cube = c.loadURDF("cube_small.urdf", [*xy, CUBE_SIDE_M / 2], globalScaling=1.0)
        colour = [*rng.uniform(0.2, 1.0, 3).tolist(), 1.0]
        c.changeVisualShape(self._cube, -1, rgbaColor=colour)
        state = c.getLinkState(self._robot, EE_LINK)
        self._pos = np.clip(np.array(state[4]), *np.array(WORKSPACE).T)
        self._tilt = np.zeros(3)  # roll, pitch, yaw (rad) away from "pointing down"
        self._grip = 1.0

    def _render(self) -> np.ndarray:
        _, _, rgba, _, _ = self._c.getCameraImage(
            self.size,
            self.size,
            self._view,
            self._proj,
            shadow=0,
            renderer=self._pb.ER_TINY_RENDERER,
            flags=self._pb.ER_NO_SEGMENTATION_MASK,
        )
        return np.asarray(rgba, np.uint8).reshape(self.size, self.size, 4)[..., :3].copy()

    def reset(self, seed: int) -> np.ndarray:
        self._build(np.random.default_rng(seed))
        self._drive()
        return self._render()

    def _drive(self) -> None:
        c = self._c
        orn = c.getQuaternionFromEuler([math.pi + self._tilt[0], self._tilt[1], self._tilt[2]])
        q = c.calculateInverseKinematics(
            self._robot, EE_LINK, self._pos.tolist(), orn, maxNumIterations=50
        )
        c.setJointMotorControlArray(
            self._robot, list(ARM_JOINTS), self._pb.POSITION_CONTROL, list(q[:7]), forces=[240] * 7
        )
        width = 0.04 * self._grip  # metres per finger
        c.setJointMotorControlArray(
            self._robot, list(FINGERS), self._pb.POSITION_CONTROL, [width] * 2, forces=[40] * 2
        )
        for _ in range(SUBSTEPS):
            c.stepSimulation()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        a = np.clip(np.asarray(action, np.float64), self.action_space.low, self.action_space.high)
        self._pos = np.clip(self._pos + POS_STEP_M * a[:3], *np.array(WORKSPACE).T)
        tilt = self._tilt + ROT_STEP_RAD * a[3:6]
        tilt[:2] = np.clip(tilt[:2], -MAX_TILT_RAD, MAX_TILT_RAD)  # yaw is free
        self._tilt, self._grip = tilt, float(a[6])
        self._drive()
        z = self._c.getBasePositionAndOrientation(self._cube)[0][2] - CUBE_SIDE_M / 2
        return self._render(), float(z > LIFT_M), False

    def close(self) -> None:
        try:
            self._c.disconnect()
        except Exception:  # already disconnected
            pass


def make(name: str, size: int) -> PandaArm:
    try:
        import pybullet  # noqa: F401
        import pybullet_data  # noqa: F401
    except ImportError as e:
        raise missing(name, "pybullet", e) from e
    try:
        return PandaArm(size)
    except Exception as e:  # no physics server, URDF missing
        raise cannot_start(name, "pybullet", e) from e
