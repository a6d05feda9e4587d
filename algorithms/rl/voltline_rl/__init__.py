"""Voltline RL algorithms: GRPO, PPO and SFT training LoRA adapters on captured token ids.

Found by name through the ``voltline.algorithms`` entry points (``voltline.algorithms.get("grpo")``);
importing this package pulls in torch, so core never does it unless an RL algorithm is used.
"""

from .grpo import GRPO
from .ppo import PPO
from .sft import SFT, load_trajectories, select_best

__all__ = ["GRPO", "PPO", "SFT", "load_trajectories", "select_best"]
