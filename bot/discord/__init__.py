"""The Discord adapter (discord.py): slash commands, persistent buttons, and the result presenter."""
