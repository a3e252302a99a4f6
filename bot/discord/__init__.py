"""The Discord adapter (discord.py): slash commands, persistent buttons, and the result presenter.

Declared to the rest of majicbot in `platform.py`; its config section is `settings.py`.
"""

from storage.jobs import Platform

DISCORD = Platform("discord")
