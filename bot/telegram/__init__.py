"""The Telegram adapter: python-telegram-bot handlers, buttons and the presenter of job progress.

Declared to the rest of majicbot in `platform.py`; its config section is `settings.py`.
"""

from storage.jobs import Platform

TELEGRAM = Platform("telegram")
