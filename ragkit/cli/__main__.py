"""``python -m ragkit.cli`` (as ``accelerate launch -m ragkit.cli align ppo ...`` runs it)."""

from ragkit.cli import main

main()
