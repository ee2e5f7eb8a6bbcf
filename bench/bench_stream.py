"""The Output view's cost per batch of streamed tokens, early in a long run against late in it.

    .venv/bin/python bench/bench_stream.py [--tokens 3000] [--batch 10] [--width 60]

A reasoning model thinks for thousands of tokens, so what the view does per batch must not grow
with the text before it. Three synthetic streams go into a headless ``StreamView`` (no model):
English words, Chinese without spaces (one word to rich's wrapper, folded over every line), and
English with a SEAL thought tag after every ".\\n\\n" (a tag every 30 tokens). For each, prints the
mean milliseconds per batch of ``feed`` (laying the new text out and wrapping it; the
repaint, a frame's wait here, is not counted) over the first and the last 10% of the
batches, and their ratio: about 1 when the cost stays flat, large when every batch re-wraps the
whole text.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from textual.app import App

from latentlocal import events as ev
from tui.widgets.stream import StreamView

WORDS = [" the", " number", " of", " apples", " is", " 12", " so", " we", " add", " 7", ","]
CJK = ["思考", "这个", "问题", "，", "我们", "需要", "计算", "苹果", "的", "数量", "。"]


def stream(kind: str, n: int) -> list[ev.Event]:
    out: list[ev.Event] = []
    for i in range(n):
        if kind == "cjk":
            out.append(ev.Token(text=CJK[i % len(CJK)], token_id=0, phase="think"))
        elif kind == "seal" and i % 30 == 29:
            out.append(ev.Token(text=".\n\n", token_id=0, phase="think"))
            out.append(ev.Thought(index=i // 30, label="execution", text=""))
        else:
            out.append(ev.Token(text=WORDS[i % len(WORDS)], token_id=0, phase="think"))
    return out


async def measure(kind: str, tokens: int, batch: int, width: int) -> tuple[float, float]:
    class Host(App):
        def compose(self):
            yield StreamView(id="s")

    app = Host()
    async with app.run_test(size=(width, 30)) as pilot:
        view = app.query_one(StreamView)
        view.set_live(True)
        events = stream(kind, tokens)
        costs = []
        for i in range(0, len(events), batch):
            t0 = time.perf_counter()
            view.feed(events[i:i + batch])  # the new pieces laid out and wrapped
            costs.append(time.perf_counter() - t0)
            await pilot.pause()  # the repaint of the lines that changed (a frame; not counted)
        tenth = max(1, len(costs) // 10)
        return statistics.mean(costs[:tenth]) * 1e3, statistics.mean(costs[-tenth:]) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--width", type=int, default=60, help="terminal columns")
    args = ap.parse_args()
    for kind in ("english", "cjk", "seal"):
        first, last = asyncio.run(measure(kind, args.tokens, args.batch, args.width))
        print(f"{kind:8s} {args.tokens} tokens in batches of {args.batch}: first 10% {first:.2f} ms/batch, "
              f"last 10% {last:.2f} ms/batch, last/first {last / first:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
