"""aiogram routers. Thin: parse the update, call a service, nothing else."""

from __future__ import annotations

from aiogram import Router

from handlers import callbacks, commands, generation, language, messages, operators


def get_routers() -> list[Router]:
    # Order matters: commands before the catch-all text handler.
    return [
        operators.create_router(),
        commands.create_router(),
        language.create_router(),  # before callbacks: its catch-all takes any button
        callbacks.create_router(),
        generation.create_router(),
        messages.create_router(),
    ]
