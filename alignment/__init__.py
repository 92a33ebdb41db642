"""RLHF alignment: preference data, SFT, reward models and PPO (work in progress)."""
