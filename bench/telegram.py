"""Telegram throughput: updates/s through the real python-telegram-bot and the fake Bot API
(tests/fake_telegram.py), our bot (`refunddesk serve`, telegram.enabled) against an echo bot
(bench/_echo_bot.py: PTB's own Updater, one reply per update) on the same fake, in one run.

N customers hold a refund dialog at the same time. Each sends its next message only when the
bot has answered the previous one, as a person does: /refund, a sentence naming the amount
and time, the "paid" button, the account ID, a screenshot (downloaded through getFile), the
"done" button, "confirm" (seven updates, one answer each). The echo bot gets the same updates.

    python bench/telegram.py                     # 1,000 concurrent dialogs, 7,000 updates
    python bench/telegram.py --dialogs 5000

Target (issue 7): our bot at >= 50 % of the echo bot's updates/s.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import datetime, timedelta

import _common as c

# This file is named like the library (python-telegram-bot's `telegram`): take bench/ off the
# import path so that nothing imported from here on finds this file instead of it.
sys.path[:] = [p for p in sys.path if p and c.Path(p).resolve() != c.BENCH] + [str(c.REPO / "tests")]


def yesterday_at_ten() -> str:
    return (datetime.now(c.SHANGHAI) - timedelta(days=1)).strftime("%Y-%m-%d") + " 10:00"


def make_fake(dialogs: int, photo_bytes: int):
    """A fake Bot API whose sendMessage hands the dialog its next update."""
    from fake_telegram import FakeTelegram, Person

    class DialogFake(FakeTelegram):
        def __init__(self) -> None:
            super().__init__()
            self.replies: dict[int, int] = {}
            self.pushed: dict[int, int] = {}
            self.scripts: dict[int, list] = {}
            self.complete: set[int] = set()
            self.done = threading.Event()
            self.first_push = 0.0
            self.last_reply = 0.0
            self.step_lock = threading.Lock()

        def api_sendMessage(self, params):
            status, result = super().api_sendMessage(params)
            if status == 200:
                self.answered(int(params["chat_id"]))
            return status, result

        def answered(self, chat: int) -> None:
            """The customer reads the answer and sends the next message of the script."""
            with self.step_lock:
                self.replies[chat] = self.replies.get(chat, 0) + 1
                script = self.scripts.get(chat)
                if script is None or self.replies[chat] < self.pushed[chat]:
                    return
                if self.pushed[chat] >= len(script):
                    if chat not in self.complete:
                        self.complete.add(chat)
                        self.last_reply = time.monotonic()
                        if len(self.complete) == len(self.scripts):
                            self.done.set()
                    return
                update = script[self.pushed[chat]]
                self.pushed[chat] += 1
            self.push(update())

        def start(self):
            super().start()
            # http.server writes the status line, each header and the body in separate sends:
            # with Nagle's algorithm and delayed ACKs every answer then waits ~40 ms, and both
            # bots would measure that instead of themselves. One buffered write, no delay.
            handler = self.server.RequestHandlerClass
            handler.wbufsize = 64 * 1024
            handler.disable_nagle_algorithm = True
            return self

        def begin(self) -> None:
            with self.step_lock:
                self.first_push = time.monotonic()
                first = []
                for chat, script in self.scripts.items():
                    self.pushed[chat] = 1
                    first.append(script[0])
            for update in first:
                self.push(update())

    fake = DialogFake()
    import random

    rng = random.Random(11)
    for n in range(dialogs):
        person = Person(fake, 500_000 + n, language="en", first_name=f"Customer{n}")
        photo = c.screenshot_png(photo_bytes, seed=n)
        # Updates are built when sent (message dates and file ids as Telegram would give them).
        fake.scripts[person.id] = [
            lambda p=person: p.text("/refund"),
            lambda p=person: p.text(f"The API timed out every time and I was still charged {rng.randint(2, 90)}.50 USD on {yesterday_at_ten()}"),
            lambda p=person: p.press("choose:credit_type:paid"),
            lambda p=person, n=n: p.text(f"acme-{n}"),
            lambda p=person, data=photo: p.photo(data, thumbnail=b"thumb"),
            lambda p=person: p.press("done_evidence"),
            lambda p=person: p.press("confirm"),
        ]
    return fake


def run_phase(name: str, fake, start_bot, stop_bot, timeout: float) -> dict:
    fake.start()
    try:
        start_bot(fake)
        polls = lambda: len(fake.calls_of("getUpdates"))  # noqa: E731
        c.wait_for(lambda: polls() > 0, 60, 0.05, f"{name} to poll getUpdates")
        updates = sum(len(s) for s in fake.scripts.values())
        fake.begin()
        finished = fake.done.wait(timeout)
        elapsed = (fake.last_reply if finished else time.monotonic()) - fake.first_push
        answered = sum(min(fake.replies.get(chat, 0), len(script)) for chat, script in fake.scripts.items())
        return {"updates": updates, "answered": answered, "seconds": elapsed, "rate": answered / elapsed, "finished": finished}
    finally:
        stop_bot()
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogs", type=int, default=1000, help="concurrent dialogs (default 1000)")
    parser.add_argument("--photo-bytes", type=int, default=20_000, help="size of each customer's screenshot (default 20000)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each bot to finish")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders (store, logs)")
    c.add_workers_option(parser)
    args = parser.parse_args()

    c.header("Telegram throughput (real PTB, fake Bot API)")
    folder = c.scratch("telegram", args.keep)
    processes: dict[str, object] = {}

    def start_echo(fake) -> None:
        processes["echo"] = c.spawn([c.PYTHON, str(c.BENCH / "_echo_bot.py"), fake.url, fake.token], folder / "echo.log")

    def stop_echo() -> None:
        if "echo" in processes:
            c.stop_process(processes.pop("echo"))

    serve_box: dict[str, c.Serve] = {}

    def start_ours(fake) -> None:
        settings = c.base_settings(folder, **{"telegram.enabled": True, "telegram.api_url": fake.url, "worker.processes": args.workers})
        serve = c.Serve(folder, settings, env={"REFUNDDESK_TELEGRAM_TOKEN": fake.token})
        serve_box["serve"] = serve
        serve.start()

    def stop_ours() -> None:
        if "serve" in serve_box:
            serve_box["serve"].stop()

    print(f"{args.dialogs} concurrent dialogs, 7 updates each")
    echo = run_phase("the echo bot", make_fake(args.dialogs, args.photo_bytes), start_echo, stop_echo, args.timeout)
    print(f"  echo bot: {echo['answered']} updates answered in {echo['seconds']:.1f} s")
    ours = run_phase("refunddesk serve", make_fake(args.dialogs, args.photo_bytes), start_ours, stop_ours, args.timeout)
    print(f"  serve:    {ours['answered']} updates answered in {ours['seconds']:.1f} s")
    serve = serve_box["serve"]
    db = serve.db()
    statuses = dict(db.execute("SELECT status, count(*) FROM cases GROUP BY status").fetchall())
    (dead,) = db.execute("SELECT count(*) FROM inbound WHERE status = 'dead'").fetchone()
    db.close()
    print(f"  cases: {statuses}; dead letters: {dead}")
    errors = serve.errors()
    if errors:
        print(f"WARNING: {len(errors)} error lines in serve's log", *errors[:5], sep="\n  ")
    if not (echo["finished"] and ours["finished"]):
        print("WARNING: a bot did not answer every update before the timeout; rates count answered updates")
    ratio = ours["rate"] / echo["rate"]
    print()
    print(f"{'':30}{'updates/s':>10}{'vs echo':>10}{'target':>10}")
    print(f"{'echo bot (baseline)':30}{echo['rate']:10.1f}{'100 %':>10}")
    print(f"{'serve: dialog, store, replies':30}{ours['rate']:10.1f}{ratio:10.0%}{'>= 50 %':>10}  {c.verdict(ratio >= 0.5 and ours['finished'])}")


if __name__ == "__main__":
    main()
