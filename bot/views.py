"""Operator-facing reports as text: the agents list and the statistics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from bot import texts
from bot.services.operators import AgentListing, AgentReport

_WINDOW = re.compile(r"^(\d{1,3})([hd])$")
MAX_WINDOW = timedelta(days=90)
DEFAULT_WINDOW = "7d"


def parse_window(argument: str | None) -> tuple[timedelta, str] | None:
    """ "24h" / "7d" -> (timedelta, label); None when it is not a window we accept."""
    label = (argument or DEFAULT_WINDOW).strip().lower()
    match = _WINDOW.match(label)
    if match is None:
        return None
    amount, unit = int(match.group(1)), match.group(2)
    window = timedelta(hours=amount) if unit == "h" else timedelta(days=amount)
    if not timedelta(0) < window <= MAX_WINDOW:
        return None
    return window, label


def agents_list(listings: Sequence[AgentListing]) -> str:
    lines = [str(texts.AGENTS_HEADER)]
    for item in listings:
        lines.append(
            texts.AGENT_LINE.format(
                marker="▶" if item.serves_here else "•",
                name=item.name,
                title=item.title,
                platform=item.platform,
                default=texts.AGENT_DEFAULT_MARK if item.is_default else "",
            )
        )
    return "\n".join(lines)


def stats_report(reports: Sequence[AgentReport], label: str) -> str:
    lines = [texts.STATS_HEADER.format(window=label)]
    for report in reports:
        s = report.stats
        ratio = (
            texts.STATS_RATIO.format(percent=round(100 * s.like_ratio))
            if s.like_ratio is not None
            else ""
        )
        lines.append(
            texts.STATS_AGENT.format(
                title=report.title,
                name=report.name,
                answers=s.answers,
                errors=s.errors,
                stopped=s.stopped,
                likes=s.likes,
                dislikes=s.dislikes,
                ratio=ratio,
                first=_seconds(s.median_first_text_s),
                total=_seconds(s.median_total_s),
            )
        )
        if report.platform_error is not None:
            lines.append(texts.STATS_PLATFORM_FAILED.format(reason=report.platform_error))
        elif report.platform_stats:
            lines.append(
                texts.STATS_PLATFORM.format(
                    platform="Dify", summary=_platform_summary(report.platform_stats)
                )
            )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    if value is None:
        return str(texts.STATS_NONE)
    return str(texts.STATS_SECONDS).format(seconds=f"{value:.1f}")


def _platform_summary(stats: dict[str, list[dict[str, Any]]]) -> str:
    """One compact line: each endpoint's numeric columns, summed (counts) or averaged (rates)."""
    parts = []
    for endpoint, rows in stats.items():
        totals: dict[str, float] = {}
        for row in rows:
            for key, value in row.items():
                if key != "date" and isinstance(value, int | float) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0.0) + float(value)
        averaged = endpoint.startswith(("average", "user-satisfaction", "tokens-per"))
        for key, total in totals.items():
            value = total / len(rows) if averaged and rows else total
            parts.append(f"{key.replace('_', ' ')} {value:g}")
    return ", ".join(parts) or str(texts.STATS_NONE)
