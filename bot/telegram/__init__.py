"""The Telegram adapter: python-telegram-bot handlers, buttons and the presenter of job progress."""
