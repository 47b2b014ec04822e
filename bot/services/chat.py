"""ChatService: one user message -> one answer (order, state, stream, stop, finish).

Handlers call `submit`, `stop`, `reset`; they never see partial text. An answer runs in a task
of this service, not in the handler: the handler returns at once, so aiogram lets go of the
update and its middleware chain (about 30 KB per message) while the answer streams for a
minute. The service owns those tasks: `shutdown` ends them, `wait_idle` waits for them.

It decides which agent answers, keeps the conversation ref in storage, feeds the agent's
events to a `ReplyStream`, and composes the final state (footer, buttons). Whatever goes
wrong, the user gets a final message: partial text is kept and marked, errors become a short,
specific text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from aiogram.types import InlineKeyboardMarkup
from redis.exceptions import RedisError

from bot import texts
from bot.agents.base import (
    AgentClient,
    AgentError,
    AgentRequest,
    AnswerAccumulator,
    AnswerRef,
    ChatTurn,
    ConversationNotFound,
    FinishReason,
    KeepsNoHistory,
    ReasoningDelta,
    Started,
    SupportsBranching,
    SupportsFeedback,
    SupportsStop,
    SupportsSuggestions,
    TextDelta,
    TextReplace,
)
from bot.agents.registry import AgentDirectory
from bot.keyboards import MAX_SUGGESTIONS, answer_keyboard, stop_keyboard
from bot.lean_event import LeanEvent
from bot.services.lanes import Lanes
from bot.services.routing import AgentRouting
from bot.streaming.citations import citations
from bot.streaming.clock import Clock
from bot.streaming.render import Entity, RenderedText, plain, utf16_len
from bot.streaming.reply import DraftSupport, ReplyStream
from bot.streaming.sender import ChatSender, Target
from storage import AnswerRecord, ChatScope, RunningAnswer, Storage

logger = logging.getLogger("relaygram.chat")


Privilege = Callable[[], Awaitable[bool]]


class StopOutcome(Enum):
    STOPPED = "stopped"
    NOTHING_RUNNING = "nothing_running"
    NOT_ALLOWED = "not_allowed"  # someone else's answer


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How answers are shown: drafts in private chats where possible (STREAM_MODE)."""

    mode: str = "auto"  # "auto" | "draft" | "edit"


@dataclass(frozen=True, slots=True)
class Incoming:
    """A question for the agent, as the service needs it (built by handlers from an update)."""

    scope: ChatScope
    user_id: int
    text: str
    private: bool
    message_id: int | None = None  # the user's message, replied to in groups
    reply_to_message_id: int | None = None  # the bot message the user replied to, if any


@dataclass(slots=True)
class _Run:
    """An answer being generated in this process."""

    run_id: str
    scope: ChatScope
    agent: str
    client: AgentClient
    end_user: str
    user_id: int = 0  # who asked
    draft_id: int | None = None
    stop_requested: LeanEvent = field(default_factory=LeanEvent)
    remembered: LeanEvent = field(default_factory=LeanEvent)  # its record is saved
    keep_conversation: bool = True  # False after /reset during the answer
    task_id: str | None = None


class ChatService:
    STOP_CALL_TIMEOUT = 5.0
    SUGGESTIONS_TIMEOUT = 4.0
    SHUTDOWN_GRACE = 10.0  # seconds to let stopped answers reach their final state
    RECORD_WAIT = 5.0  # seconds a button press waits for its answer's record

    def __init__(
        self,
        *,
        agents: AgentDirectory,
        routing: AgentRouting,
        storage: Storage,
        sender: ChatSender,
        clock: Clock,
        replica: str,
        stream_settings: StreamSettings | None = None,
    ) -> None:
        self._agents = agents
        self._routing = routing
        self._storage = storage
        self._sender = sender
        self._clock = clock
        self._replica = replica
        self._stream_settings = stream_settings or StreamSettings()
        mode = self._stream_settings.mode
        self._drafts = DraftSupport(enabled=mode != "edit", insist=mode == "draft")
        self._lanes = Lanes()
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # answers running or queued in a lane
        self._closing = False
        # The ⏹ keyboard, one per language, shared by every answer streaming in a group: each
        # copy of aiogram's models costs ~1 KB, and nothing changes them once made.
        self._stop_keyboards: dict[str, InlineKeyboardMarkup] = {}

    # --- what handlers call --------------------------------------------------------------------

    async def agent_title(self, scope: ChatScope) -> str:
        client = self._agents.get(await self._agent_for(scope))
        return client.title if client else str(texts.AGENT_FALLBACK_TITLE)

    def is_busy(self, scope: ChatScope) -> bool:
        """Whether an answer is running or queued in this chat (in this process)."""
        return self._lanes.busy(scope.key)

    def submit(self, incoming: Incoming) -> None:
        """Answer one message in the background; messages of one chat are answered one after
        another, in the order submitted (a task joins its chat's lane in its first step, and
        tasks take their first step in the order they were created)."""
        task = asyncio.create_task(self._answer_safely(incoming), name=f"answer:{incoming.scope}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ask(self, incoming: Incoming) -> None:
        """Answer one message and return when its final state is shown."""
        async with self._lanes.hold(incoming.scope.key):
            if self._closing:  # it waited in the lane while the bot began to shut down
                await self._sender.notice(_target(incoming), plain(str(texts.SHUTTING_DOWN)))
                return
            await self._answer(incoming)

    @property
    def idle(self) -> bool:
        """Whether no submitted answer is running or waiting for its turn."""
        return not self._tasks

    async def wait_idle(self) -> None:
        """Return once every submitted answer has finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def stop(
        self,
        scope: ChatScope,
        user_id: int | None = None,
        may_stop_others: Privilege | None = None,
    ) -> StopOutcome:
        """Stop the answer running in this chat, here or on another replica.

        With `user_id`, someone else's answer is stopped only if `may_stop_others()` says so
        (an operator or a chat admin); asked lazily, since it may cost a Bot API call.
        """
        run = self._runs.get(scope.key)
        asker = run.user_id if run is not None else None
        remote = None
        if run is None:
            remote = await self._storage.runs.get(scope)
            if remote is None:
                return StopOutcome.NOTHING_RUNNING
            asker = remote.user_id
        someone_else = user_id is not None and user_id != asker
        if someone_else and (may_stop_others is None or not await may_stop_others()):
            return StopOutcome.NOT_ALLOWED
        if run is not None:
            run.stop_requested.set()
            return StopOutcome.STOPPED
        assert remote is not None
        client = self._agents.get(remote.agent)
        if remote.task_id and isinstance(client, SupportsStop):
            # The replica reading that stream finishes it when the platform ends it.
            await self._call_stop(client, remote.task_id, remote.end_user, remote.agent)
        return StopOutcome.STOPPED

    async def stop_draft(self, scope: ChatScope, draft_id: int) -> StopOutcome:
        """The user pressed the stop button of a draft (a `stopped_message_generation` update)."""
        run = self._runs.get(scope.key)
        if run is not None and run.draft_id not in (None, draft_id):
            return StopOutcome.NOTHING_RUNNING  # a stale draft of an answer already finished
        return await self.stop(scope)

    async def reset(self, scope: ChatScope) -> str:
        """Forget the conversation with this chat's agent; returns the agent's title."""
        agent = await self._agent_for(scope)
        await self._storage.conversations.clear(scope, agent)
        await self._storage.history.clear(scope, agent)
        run = self._runs.get(scope.key)
        if run is not None and run.agent == agent:
            run.keep_conversation = False  # its answer must not re-save the old conversation
        client = self._agents.get(agent)
        return client.title if client else agent

    async def find_answer(self, scope: ChatScope, message_id: int) -> AnswerRecord | None:
        """The record of an answer the bot sent. A button pressed the instant the final message
        appeared can beat the record's write by a few milliseconds: wait for it then."""
        record = await self._storage.answers.get(scope, message_id)
        run = self._runs.get(scope.key)
        if record is None and run is not None:
            await run.remembered.wait_for(self.RECORD_WAIT)
            record = await self._storage.answers.get(scope, message_id)
        return record

    async def find_suggestion(self, scope: ChatScope, message_id: int, index: int) -> str | None:
        """The suggested question behind a button under an earlier answer, if still known."""
        record = await self.find_answer(scope, message_id)
        if record is None or not 0 <= index < len(record.suggestions):
            return None
        return record.suggestions[index]

    async def ask_suggested(
        self, scope: ChatScope, question: str, user_id: int, private: bool
    ) -> None:
        """Ask a suggested question: show it in the chat as asked, then answer it."""
        notice_id = await self._sender.say(
            Target(scope.chat_id, scope.thread_id),
            texts.SUGGESTION_ASKED.format(question=question),
        )
        self.submit(Incoming(scope, user_id, question, private, notice_id))

    async def shutdown(self) -> None:
        """Stop every running answer so each gets its final state before the process exits;
        a message still waiting for its turn is answered with a "send it again" notice."""
        self._closing = True
        for run in list(self._runs.values()):
            run.stop_requested.set()
        deadline = self._clock.now() + self.SHUTDOWN_GRACE
        while self._tasks and self._clock.now() < deadline:
            await self._clock.sleep(0.05)
        left = list(self._tasks)
        for task in left:
            task.cancel()
        if left:
            logger.warning("%d answers did not finish within the shutdown grace", len(left))
            await asyncio.gather(*left, return_exceptions=True)

    async def _answer_safely(self, incoming: Incoming) -> None:
        """The safety net of a background answer, as `dispatcher.errors` is for handlers: a
        failure before the answer's reply exists (storage down) is logged and the user told."""
        try:
            await self.ask(incoming)
        except Exception:
            logger.exception("could not answer in chat %s", incoming.scope.chat_id)
            try:
                await self._sender.say(_target(incoming), str(texts.INTERNAL_ERROR))
            except Exception:  # the net must not throw
                logger.exception("could not tell the user about the error")

    # --- one answer ----------------------------------------------------------------------------

    async def _agent_for(self, scope: ChatScope) -> str:
        return await self._routing.current(scope)

    @staticmethod
    def _end_user(incoming: Incoming) -> str:
        # Dify scopes conversations to an end user: a group's conversation must belong to the
        # group, not to whoever happened to write first.
        if incoming.private:
            return f"tg-{incoming.user_id}"
        return f"tg-chat-{incoming.scope.chat_id}"

    async def _answer(self, incoming: Incoming) -> None:
        scope = incoming.scope
        agent = await self._agent_for(scope)
        client = self._agents.get(agent)
        target = _target(incoming)
        if client is None:  # the agents file no longer has this chat's agent
            await self._sender.notice(target, plain(str(texts.INTERNAL_ERROR)))
            return
        run = _Run(
            uuid.uuid4().hex, scope, agent, client, self._end_user(incoming), incoming.user_id
        )
        self._runs[scope.key] = run
        reply = self._new_reply(target, incoming.private)
        run.draft_id = reply.draft_id
        reply.start()
        try:
            await self._storage.runs.start(
                scope,
                RunningAnswer(
                    run.run_id, agent, incoming.user_id, run.end_user, None, self._replica
                ),
            )
            await self._generate(run, incoming, reply)
        except Exception:
            logger.exception("answer failed in chat %s (agent %s)", scope.chat_id, agent)
            if not reply.delivered:  # never replace an answer the user already has
                await reply.finish("", _note(str(texts.INTERNAL_ERROR)))
        finally:
            if self._runs.get(scope.key) is run:
                del self._runs[scope.key]
            await reply.close()
            with contextlib.suppress(Exception):
                await self._storage.runs.finish(scope, run.run_id)

    def _new_reply(self, target: Target, private: bool) -> ReplyStream:
        use_drafts = private and self._stream_settings.mode != "edit" and self._drafts.available
        return ReplyStream(
            self._sender,
            target,
            self._clock,
            # A stable, non-zero id per answer: Telegram animates changes to the same draft.
            draft_id=secrets.randbelow(2**31 - 1) + 1 if use_drafts else None,
            drafts=self._drafts,
            stop_markup=self._stop_keyboard(),
        )

    def _stop_keyboard(self) -> InlineKeyboardMarkup:
        label = str(texts.STOP_BUTTON)  # in this answer's language
        keyboard = self._stop_keyboards.get(label)
        if keyboard is None:
            keyboard = self._stop_keyboards[label] = stop_keyboard()
        return keyboard

    async def _generate(self, run: _Run, incoming: Incoming, reply: ReplyStream) -> None:
        scope = run.scope
        started_at = self._clock.now()
        conversation = await self._storage.conversations.get(scope, run.agent)
        parent = await self._branch_point(run, incoming)
        answer = await self._stream(run, incoming, conversation, parent, reply)
        if isinstance(answer.error, ConversationNotFound) and not answer.text:
            logger.info("agent %s forgot conversation in chat %s; starting anew", run.agent, scope)
            await self._storage.conversations.clear(scope, run.agent)
            await self._sender.notice(
                Target(scope.chat_id, scope.thread_id),
                plain(texts.CONVERSATION_RESTARTED.format(agent=run.client.title)),
            )
            answer = await self._stream(run, incoming, None, None, reply)

        stopped = run.stop_requested.is_set()
        if answer.error is not None:
            logger.warning(
                "agent %s failed in chat %s after %.1fs: %s",
                run.agent,
                scope.chat_id,
                self._clock.now() - started_at,
                answer.error,
            )
        suggestions: list[str] = []
        if answer.finished is not None and answer.error is None and not stopped:
            suggestions = await self._suggestions(run, answer)
        # Buttons belong under an answer the agent knows (has an id for): suggestions are only
        # fetched for one, and an error text gets neither.
        can_rate = isinstance(run.client, SupportsFeedback) and answer.message_id is not None
        markup = answer_keyboard(feedback=can_rate, suggestions=suggestions)
        message_ids = await reply.finish(
            answer.text,
            self._footer(run, answer, stopped),
            markup,
            reasoning=answer.reasoning,
        )
        await self._remember(run, incoming, answer, message_ids, suggestions)
        run.remembered.set()
        await self._record_stats(run, answer, reply, started_at, stopped)

    async def _record_stats(
        self,
        run: _Run,
        answer: AnswerAccumulator,
        reply: ReplyStream,
        started_at: float,
        stopped: bool,
    ) -> None:
        outcome = "stopped" if stopped else "error" if answer.error is not None else "ok"
        first = reply.first_text_at - started_at if reply.first_text_at is not None else None
        try:
            await self._storage.stats.record_answer(
                run.scope.bot_id,
                run.agent,
                at=time.time(),
                first_text_s=first,
                total_s=self._clock.now() - started_at,
                outcome=outcome,
            )
        except RedisError as exc:  # statistics must never break an answer
            logger.warning("could not record statistics: %s", exc)

    async def _stream(
        self,
        run: _Run,
        incoming: Incoming,
        conversation: str | None,
        parent: str | None,
        reply: ReplyStream,
    ) -> AnswerAccumulator:
        """Feed one agent stream into the reply until it ends, fails, or /stop arrives."""
        answer = AnswerAccumulator()
        request = AgentRequest(
            text=incoming.text,
            user=run.end_user,
            conversation=conversation,
            parent_message_id=parent,
            history=await self._history(run),
        )

        async def pump() -> None:
            async with contextlib.aclosing(run.client.stream(request)) as events:
                async for event in events:
                    answer.apply(event)
                    if isinstance(event, TextDelta | TextReplace | ReasoningDelta):
                        reply.update(answer.text, answer.reasoning)
                    elif isinstance(event, Started):
                        await self._on_started(run, event)
                    if reply.failure is not None:
                        run.stop_requested.set()  # nobody can see the answer: stop paying for it
                        return

        pumping = asyncio.create_task(pump(), name=f"agent:{run.agent}")
        # Wait for a stop or the stream's end, whichever comes first, on one future: no task
        # waiting on the event, no `asyncio.wait` (two coroutines), per answer in flight.
        first = run.stop_requested.waiter()
        pumping.add_done_callback(lambda _: _resolve(first, False))
        try:
            await first
        except asyncio.CancelledError:
            pumping.cancel()  # the answer is cancelled (shutdown): so is its stream
            raise
        finally:
            first.cancel()
        if not pumping.done():
            if run.task_id and isinstance(run.client, SupportsStop):
                await self._call_stop(run.client, run.task_id, run.end_user, run.agent)
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
        else:
            pumping.result()  # an adapter bug surfaces here, and is handled by _answer
        return answer

    async def _branch_point(self, run: _Run, incoming: Incoming) -> str | None:
        """The earlier answer to continue from, when the user replied to one. An agent that
        can only continue its latest answer gets none, and the user is told."""
        if incoming.reply_to_message_id is None:
            return None
        record = await self._storage.answers.get(run.scope, incoming.reply_to_message_id)
        if record is None or record.agent != run.agent or record.agent_message_id is None:
            return None
        if isinstance(run.client, SupportsBranching):
            return record.agent_message_id
        latest = await self._storage.answers.latest(run.scope, run.agent)
        if latest is not None and latest not in record.message_ids:
            await self._sender.say(
                Target(run.scope.chat_id, run.scope.thread_id),
                texts.NO_BRANCHING.format(agent=run.client.title),
            )
        return None

    async def _history(self, run: _Run) -> tuple[ChatTurn, ...]:
        if not isinstance(run.client, KeepsNoHistory):
            return ()
        turns = await self._storage.history.get(run.scope, run.agent)
        return tuple(ChatTurn(role, content) for role, content in turns)

    async def _on_started(self, run: _Run, event: Started) -> None:
        if event.task_id:
            run.task_id = event.task_id
            await self._storage.runs.update_task(run.scope, run.run_id, event.task_id)
        if event.conversation and run.keep_conversation:
            # Saved now, not at the end: a cut-short answer still continues this conversation.
            await self._storage.conversations.set(run.scope, run.agent, event.conversation)

    async def _call_stop(self, client: SupportsStop, task_id: str, user: str, agent: str) -> None:
        try:
            await asyncio.wait_for(client.stop(task_id, user), self.STOP_CALL_TIMEOUT)
        except (AgentError, TimeoutError) as exc:
            logger.warning("stop call to agent %s failed: %s", agent, exc)

    async def _suggestions(self, run: _Run, answer: AnswerAccumulator) -> list[str]:
        if not isinstance(run.client, SupportsSuggestions) or answer.message_id is None:
            return []
        ref = AnswerRef(answer.message_id, run.end_user, answer.conversation)
        try:
            found = await asyncio.wait_for(run.client.suggestions(ref), self.SUGGESTIONS_TIMEOUT)
        except (AgentError, TimeoutError) as exc:
            logger.info("no suggestions from agent %s: %s", run.agent, exc)
            return []
        return [q for q in found if q.strip()][:MAX_SUGGESTIONS]

    def _footer(self, run: _Run, answer: AnswerAccumulator, stopped: bool) -> RenderedText | None:
        note = self._note_for(run, answer, stopped)
        sources = citations(answer.sources) if answer.text.strip() else None
        if note is None or sources is None:
            return note or sources
        return sources + plain("\n\n") + note

    def _note_for(self, run: _Run, answer: AnswerAccumulator, stopped: bool) -> RenderedText | None:
        title = run.client.title
        if stopped:
            return _note(str(texts.FINISH_NOTES[FinishReason.STOPPED]))
        if answer.error is not None:
            return _note(texts.error_text(answer.error, title))
        reason = answer.finished.finish_reason if answer.finished else FinishReason.STOP
        if reason in texts.FINISH_NOTES:
            return _note(str(texts.FINISH_NOTES[reason]))
        if not answer.text.strip():
            return _note(texts.EMPTY_ANSWER.format(agent=title))
        return None

    async def _remember(
        self,
        run: _Run,
        incoming: Incoming,
        answer: AnswerAccumulator,
        message_ids: list[int],
        suggestions: list[str],
    ) -> None:
        conversation = answer.conversation
        if conversation and run.keep_conversation:
            await self._storage.conversations.set(run.scope, run.agent, conversation)
        # The bot's own history keeps what the user saw of complete or stopped answers; a
        # failed or cut answer is left out, as platforms with server-side history do.
        keep_turn = answer.text and answer.error is None
        if isinstance(run.client, KeepsNoHistory) and run.keep_conversation and keep_turn:
            limits = run.client.history_limits
            await self._storage.history.append(
                run.scope,
                run.agent,
                [("user", incoming.text), ("assistant", answer.text)],
                keep=max(2, 2 * limits.max_turns),
            )
        if not message_ids or answer.message_id is None:
            return
        await self._storage.answers.save(
            run.scope,
            AnswerRecord(
                agent=run.agent,
                agent_message_id=answer.message_id,
                conversation=conversation,
                user_id=incoming.user_id,
                end_user=run.end_user,
                message_ids=tuple(message_ids),
                suggestions=tuple(suggestions),
                created_at=time.time(),
            ),
        )


def _target(incoming: Incoming) -> Target:
    """Where the answer to `incoming` goes: in a group, as a reply to the question."""
    scope = incoming.scope
    return Target(scope.chat_id, scope.thread_id, None if incoming.private else incoming.message_id)


def _note(text: str) -> RenderedText:
    """A line the bot adds under an answer, in italics so it reads as the bot's, not the agent's."""
    return RenderedText(text, (Entity(type="italic", offset=0, length=utf16_len(text)),))


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
