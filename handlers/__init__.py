"""aiogram routers. Thin: parse the update, call a service, nothing else."""

from __future__ import annotations

from aiogram import Router

from handlers import callbacks, commands, generation, messages


def get_routers() -> list[Router]:
    # Order matters: commands before the catch-all text handler.
    return [
        commands.create_router(),
        callbacks.create_router(),
        generation.create_router(),
        messages.create_router(),
    ]
