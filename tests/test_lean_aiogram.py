"""aiogram imported the bot's way (`bot.lean_aiogram`): validators built on first use, and
every Telegram type and method still works. Each check runs in a fresh interpreter, where the
bot, not a test, imports aiogram first."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any


def run_fresh(code: str) -> Any:
    """Run `code` in a new interpreter; it prints one JSON value, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_bot_builds_no_telegram_validator_up_front() -> None:
    built = run_fresh(
        """
        import json
        import bot.app  # everything the bot imports at start-up
        import aiogram.methods as methods
        import aiogram.types as types

        def built(module):
            models = [getattr(module, name) for name in module.__all__]
            models = [m for m in models if hasattr(m, "__pydantic_complete__")]
            return [m.__name__ for m in models if m.__pydantic_complete__], len(models)

        print(json.dumps({"types": built(types), "methods": built(methods)}))
        """
    )
    (types_built, types_total), (methods_built, methods_total) = built["types"], built["methods"]
    assert types_total > 300
    assert methods_total > 150
    # The bot's own module-level constants (a `LinkPreviewOptions`) may build one or two.
    assert len(types_built) <= 2, types_built
    assert methods_built == []


def test_every_telegram_type_and_method_builds_and_validates_on_first_use() -> None:
    result = run_fresh(
        """
        import json
        import bot
        import aiogram.methods as methods
        import aiogram.types as types
        from aiogram.methods import SendMessage
        from aiogram.methods.base import Response

        # Nested types resolve their forward references inside another model, first of all.
        update = {
            "update_id": 7,
            "callback_query": {
                "id": "q", "chat_instance": "c", "data": "like:1",
                "from": {"id": 1, "is_bot": False, "first_name": "Ann"},
                "message": {
                    "message_id": 5, "date": 0,
                    "chat": {"id": -100, "type": "supergroup", "is_forum": True},
                    "text": "**answer**",
                    "entities": [{"type": "bold", "offset": 0, "length": 6}],
                    "reply_to_message": {
                        "message_id": 4, "date": 0, "chat": {"id": -100, "type": "supergroup"},
                        "sticker": {"file_id": "f", "file_unique_id": "u", "type": "regular",
                                    "width": 1, "height": 1, "is_animated": False,
                                    "is_video": False},
                    },
                },
            },
        }
        parsed = Response[list[types.Update]].model_validate({"ok": True, "result": [update]})
        message = parsed.result[0].callback_query.message
        call = SendMessage(
            chat_id=1,
            text="hi",
            reply_markup=types.InlineKeyboardMarkup(
                inline_keyboard=[[types.InlineKeyboardButton(text="👍", callback_data="like")]]
            ),
        )
        failed = []
        for module in (types, methods):
            for name in module.__all__:
                model = getattr(module, name)
                if not hasattr(model, "model_rebuild"):
                    continue
                try:
                    model.model_rebuild(raise_errors=True)
                except Exception as exc:
                    failed.append(f"{name}: {exc}")
                if not model.__pydantic_complete__:
                    failed.append(name)
        print(json.dumps({
            "sticker": message.reply_to_message.sticker.file_id,
            "entity": message.entities[0].type,
            "markup": call.model_dump(exclude_none=True)["reply_markup"],
            "failed": failed,
        }))
        """
    )
    assert result["failed"] == []
    assert result["sticker"] == "f"
    assert result["entity"] == "bold"
    assert result["markup"] == {"inline_keyboard": [[{"text": "👍", "callback_data": "like"}]]}


def test_pydantic_is_left_as_it_was_for_every_other_model() -> None:
    result = run_fresh(
        """
        import json
        import bot
        from pydantic import BaseModel, ConfigDict

        class Later(BaseModel):
            model_config = ConfigDict(defer_build=True)
            child: "Child | None" = None

        class Child(BaseModel):
            name: str

        # An explicit rebuild with a namespace builds now, as pydantic documents.
        Later.model_rebuild(_types_namespace={"Child": Child})
        complete = Later.__pydantic_complete__
        print(json.dumps([complete, Later(child={"name": "x"}).child.name]))
        """
    )
    assert result == [True, "x"]


def test_the_models_of_every_answer_stay_built_for_the_first_update_and_after() -> None:
    ready = run_fresh(
        """
        import gc
        import json
        from bot.app import _MODELS_OF_EVERY_ANSWER
        from bot.lean_aiogram import build_validators
        from aiogram.methods import GetUpdates, SendMessage
        from aiogram.methods.base import Response

        kept = build_validators(_MODELS_OF_EVERY_ANSWER)
        gc.collect()  # the bot collects and freezes right after, before polling
        # What aiogram asks for on each call: built already, not built on the first update.
        print(json.dumps([
            Response[GetUpdates.__returning__].__pydantic_complete__,
            Response[SendMessage.__returning__].__pydantic_complete__,
            SendMessage.__pydantic_complete__,
        ]))
        """
    )
    assert ready == [True, True, True]
