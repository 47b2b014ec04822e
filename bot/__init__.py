"""relaygram: a Telegram bot that lets people talk to hosted AI agents.

Importing any part of the bot imports aiogram first, with its Telegram types' validators built
on first use (`bot.lean_aiogram`): about 100 MB and 2 s less at start-up.
"""

from bot.lean_aiogram import import_aiogram

import_aiogram()
