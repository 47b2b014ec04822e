"""English, Russian and Chinese through the real Dispatcher: the user's Telegram language, the
chat's /lang choice over it, and the command menus per language."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Harness, bot_messages, button_data, buttons
from tests.fakes.dify import Script
from tests.fakes.telegram import FakeMessage

GROUP = -100777
MEMBER = 5001
OPERATOR = 9001


def rateable(h: Harness) -> FakeMessage | None:
    """The answer once it carries its rating buttons (`finished` looks for the English ⏹)."""
    messages = bot_messages(h)
    if messages and messages[-1].reply_markup and buttons(messages[-1])[:1] == ["👍"]:
        return messages[-1]
    return None


@pytest.mark.parametrize(
    ("language_code", "greeting"),
    [
        ("en", "Hi! I'm a bot that lets you talk to Support."),
        ("ru", "Привет! Я бот, через которого можно общаться с агентом «Support»."),
        ("zh-hans", "你好！我是一个机器人，可以让你与“Support”对话。"),
        ("de", "Hi! I'm a bot that lets you talk to Support."),  # not ours: English
    ],
)
async def test_start_greets_in_the_users_telegram_language(
    h: Harness, language_code: str, greeting: str
) -> None:
    h.say("/start", language_code=language_code)
    text = await h.until(lambda: next((t for t in h.texts() if t.startswith(greeting)), None))
    assert "/reset" in text


async def test_an_agent_error_arrives_in_russian(h: Harness) -> None:
    h.dify.fail_next(502, "Bad Gateway")

    h.say("hello", language_code="ru")

    text = "⚠️ Агент «Support» сейчас недоступен. Попробуйте через минуту."
    await h.until(lambda: text in h.texts())


async def test_the_answer_its_stop_button_and_its_note_speak_russian(h: Harness) -> None:
    h.say("/stop", language_code="ru")
    await h.until(lambda: "Сейчас я ничего не пишу — останавливать нечего." in h.texts())

    h.dify.app.default_script = Script(chunks=[f"part{i} " for i in range(200)], delay=0.02)
    h.say("long answer please", language_code="ru")
    # While it is written the answer carries the ⏹ button (made in the answer's own tasks).
    growing = await h.until(
        lambda: next(
            (m for m in bot_messages(h) if m.reply_markup and "part3" in m.visible_text), None
        )
    )
    assert buttons(growing) == ["⏹ Стоп"]
    stop = button_data(growing)[0]
    h.telegram.push_update(
        h.telegram.callback(h.user_id, growing.message_id, stop, language_code="ru")
    )
    await h.until(lambda: "Останавливаю…" in h.callback_answers())
    final = await h.until(
        lambda: next(
            (m for m in bot_messages(h) if m.visible_text.endswith("⏹ Остановлено.")), None
        )
    )
    assert final.visible_text.startswith("part0 part1 part2 part3")


async def test_lang_zh_switches_a_russian_users_chat_to_chinese(h: Harness) -> None:
    h.say("/lang zh", language_code="ru")
    # The confirmation is already in the new language.
    await h.until(lambda: "✅ 从现在起，本聊天的语言为：中文。" in h.texts())

    h.say("/stop", language_code="ru")
    await h.until(lambda: "当前没有正在生成的回答。" in h.texts())
    h.dify.fail_next(502, "Bad Gateway")
    h.say("hello", language_code="ru")
    await h.until(lambda: "⚠️ 暂时无法连接“Support”，请一分钟后再试。" in h.texts())

    # "auto" gives the chat back to the user's Telegram language.
    h.say("/lang auto", language_code="ru")
    await h.until(lambda: "✅ Теперь я отвечаю здесь каждому на языке его Telegram." in h.texts())
    h.say("/stop", language_code="ru")
    await h.until(lambda: "Сейчас я ничего не пишу — останавливать нечего." in h.texts())


async def test_lang_shows_the_picker_and_a_button_sets_the_language(h: Harness) -> None:
    h.say("/lang", language_code="ru")
    picker = await h.until(
        lambda: next((m for m in h.telegram.messages(h.user_id) if m.reply_markup), None)
    )
    assert picker.visible_text.startswith("🌐 Язык в этом чате: Русский.")
    assert "по языку Telegram" in picker.visible_text
    assert buttons(picker) == ["English", "Русский", "中文", "✓ Автоматически"]

    chinese = button_data(picker)[2]
    h.telegram.push_update(
        h.telegram.callback(h.user_id, picker.message_id, chinese, language_code="ru")
    )
    await h.until(lambda: "✅ 从现在起，本聊天的语言为：中文。" in h.texts())

    h.say("/lang", language_code="ru")
    await h.until(lambda: any(t.startswith("🌐 本聊天的语言：中文。") for t in h.texts()))
    latest = h.telegram.last_message(h.user_id)
    assert latest is not None
    assert buttons(latest) == ["English", "Русский", "✓ 中文", "自动"]


async def test_lang_with_an_unknown_language_shows_the_usage(h: Harness) -> None:
    h.say("/lang fr", language_code="zh-cn")
    await h.until(lambda: "用法：/lang en、/lang ru、/lang zh 或 /lang auto。" in h.texts())


async def test_the_feedback_toast_is_translated(h: Harness) -> None:
    h.say("rate me", language_code="ru")
    final = await h.until(lambda: rateable(h))
    like = button_data(final)[0]

    h.telegram.push_update(
        h.telegram.callback(h.user_id, final.message_id, like, language_code="ru")
    )
    await h.until(lambda: "Спасибо за 👍!" in h.callback_answers())
    h.telegram.push_update(
        h.telegram.callback(h.user_id, final.message_id, like, language_code="zh-hans")
    )
    await h.until(lambda: "你的评分已撤销。" in h.callback_answers())


async def test_command_menus_are_registered_in_every_language(h: Harness) -> None:
    private = {"type": "all_private_chats"}
    groups = {"type": "all_group_chats"}
    english = h.telegram.commands(private)
    russian = h.telegram.commands(private, language_code="ru")
    chinese = h.telegram.commands(private, language_code="zh")

    names = ["start", "help", "reset", "stop", "lang"]
    assert [c["command"] for c in english] == names
    assert [c["command"] for c in russian] == names
    assert [c["command"] for c in chinese] == names
    assert english[-1]["description"] == "Change the language"
    assert russian[-1]["description"] == "Сменить язык"
    assert chinese[-1]["description"] == "切换语言"
    assert h.telegram.commands(groups, language_code="ru")[0] == {
        "command": "help",
        "description": "Что умеет этот бот",
    }
    assert {"ru", "zh"} <= {
        c.params.get("language_code") for c in h.telegram.calls("setMyCommands")
    }


async def test_operator_menus_are_translated_too(h: Harness) -> None:
    await h.stop()
    await h.start(operators=frozenset({OPERATOR}))
    h.say("/start", chat_id=OPERATOR)  # the operator's chat exists from now on
    await h.until(lambda: h.texts(OPERATOR))
    await h.stop()
    await h.start(operators=frozenset({OPERATOR}))

    scope = {"type": "chat", "chat_id": OPERATOR}
    russian = {c["command"]: c["description"] for c in h.telegram.commands(scope, "ru")}
    assert russian["agents"] == "Список агентов"
    assert russian["lang"] == "Сменить язык"


async def test_in_a_group_only_operators_and_admins_change_the_language(h: Harness) -> None:
    await h.stop()
    await h.start(operators=frozenset({OPERATOR}))

    h.say("/lang ru", chat_id=GROUP, chat_type="supergroup", user_id=MEMBER)
    await h.until(lambda: "Only the chat's admins can change the language here." in h.texts(GROUP))

    h.say("/lang ru", chat_id=GROUP, chat_type="supergroup", user_id=OPERATOR)
    await h.until(lambda: "✅ Теперь язык этого чата: Русский." in h.texts(GROUP))
    # Now everyone here is answered in Russian, whatever their Telegram language.
    h.say("/stop", chat_id=GROUP, user_id=MEMBER, language_code="zh")
    await h.until(lambda: "Сейчас я ничего не пишу — останавливать нечего." in h.texts(GROUP))


async def test_a_stranger_is_refused_in_their_language(h: Harness) -> None:
    await h.stop()
    await h.start(allowed_users=frozenset({h.user_id}))

    h.say("hello", chat_id=4242, language_code="zh")

    await h.until(lambda: "抱歉，这是一个私人机器人。请向它的运营者申请访问权限。" in h.texts(4242))
    assert h.dify.calls == []


async def test_the_safety_net_apologises_in_the_users_language(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = h.app
    assert app is not None

    async def broken(*args: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.chat_service, "agent_title", broken)
    h.say("/start", language_code="zh")
    await h.until(lambda: "⚠️ 我这边出了点问题，请重试。" in h.texts())
