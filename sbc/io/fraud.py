"""The toll-fraud watch's shell: from the `fraud` section to the core's rules,
and once a second (on the pipeline's one timer) the watch's tick (running
minutes, calls cut with BYE), then its alerts: one log line each, counted
for the metrics, posted to the webhook; operators' clears from the CLI
picked up, and the changed state written to SQLite.

With no rule configured the engine holds no watch (`ctx.fraud` None): the
call path pays one attribute test; the tick only updates the wall offset.

With `cluster.enabled` and `cluster.share_fraud`, blocks, clears and
counters are shared with the other nodes (sbc.cluster.fraud_link), on a
Redis connection of the service's own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..config.fraud import FraudRule, zone
from ..core.engine import Engine
from ..core.fraud import FraudWatch, Metric, Rule, RuleSet, Threshold, Window
from ..core.fraud.explain import alert_view, view
from ..state.fraud import FraudKeeper
from ..state.store import Store
from .logsetup import get_logger

if TYPE_CHECKING:  # redis and aiohttp: imported only when the cluster or a webhook is on
    from ..cluster.fraud_link import FraudLink
    from .webhook import WebhookSender

log = get_logger("sbc.fraud")

TICK_S = 1.0
POLL_S = 2.0  # how often clears written by `sbc fraud clear` are looked for
_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def core_rule(r: FraudRule) -> Rule:
    thresholds = tuple((Metric(name), Threshold(level.warning, level.critical))
                       for name, level in ((m.value, getattr(r.thresholds, m.value))
                                           for m in Metric) if level is not None)
    window = None
    if r.window is not None:
        start, end = r.window.minutes
        window = Window(start, end, frozenset(_DAYS[d] for d in r.window.weekdays))
    return Rule(r.name, zone(r.timezone), thresholds, gateways=frozenset(r.gateways),
                prefixes=tuple(r.prefixes), window=window, cool_off=r.cool_off_s,
                cut_calls=r.cut_calls, sequential_gap=r.sequential_gap_s)


def fraud_rules(cfg: Config) -> RuleSet:
    """The rules, with each gateway's tech prefixes (as the destination lists strip them)."""
    return RuleSet((core_rule(r) for r in cfg.fraud.rules),
                   tech={gw.name: gw.tech_prefixes for gw in cfg.gateways},
                   default_tech=cfg.calls.tech_prefixes)


class FraudService:
    def __init__(self, cfg: Config, engine: Engine, store: Store,
                 clock: Callable[[], float], loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        self.engine = engine
        self.clock = clock
        self.watch = FraudWatch(max_numbers=cfg.fraud.max_numbers,
                                max_live=max(cfg.sip.max_dialogs, 1))
        self.watch.wall_offset = time.time() - clock()
        self.keeper = FraudKeeper(self.watch, store)
        self.alerts: Counter[tuple[str, str, str]] = Counter()  # (gateway, rule, level)
        self.webhook: WebhookSender | None = None
        self.send: Callable[[list[Any]], None] | None = None
        self._next_poll = 0.0
        self._webhook_cfg: object = None
        self.configure(cfg)
        self.cluster: FraudLink | None = None
        if cfg.cluster.enabled:
            loop = loop or _running_loop()
            if loop is not None:
                from ..cluster.fraud_link import make_fraud_link
                self.cluster = make_fraud_link(cfg.cluster, self.watch, loop)
        if self.cluster is not None:
            share = self.cluster.share
            self.keeper.on_clear = lambda gateway, rule, by, note: share.cleared(
                gateway, rule, by, note, time.time())
        now = clock()
        self.keeper.restore(now, lambda key: engine.dialogs.get(*key) is not None)
        self.keeper.poll(now)

    def configure(self, cfg: Config) -> None:
        """New rules (a reload): unchanged rules keep their counters."""
        f = cfg.fraud
        self.watch.max_numbers = f.max_numbers
        self.watch.configure(fraud_rules(cfg))
        self.engine.ctx.fraud = self.watch if self.watch.rules else None
        hook = f.webhook
        if hook != self._webhook_cfg:
            old, self.webhook = self.webhook, None
            if old is not None:
                asyncio.ensure_future(old.stop())
            if hook.url is not None:
                from .webhook import WebhookSender
                self.webhook = WebhookSender(hook.url, timeout_s=hook.timeout_s,
                                             retries=hook.retries,
                                             retry_delay_s=hook.retry_delay_s, queue=hook.queue)
                if self.send is not None:
                    self.webhook.start()
            self._webhook_cfg = hook

    def start(self, every: Callable[[float, Callable[[float], None]], None],
              send: Callable[[list[Any]], None]) -> None:
        self.send = send
        if self.webhook is not None:
            self.webhook.start()
        if self.cluster is not None:
            self.cluster.start()
        every(TICK_S, self.tick)

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
        try:
            self.keeper.flush(self.clock())
        except Exception as e:  # a full disk must not stop the shutdown
            log.error("fraud_persist_failed", error=str(e))
        if self.webhook is not None:
            await self.webhook.stop()

    def tick(self, now: float) -> None:
        watch = self.watch
        watch.wall_offset = time.time() - now
        if self.engine.ctx.fraud is not None:
            sends = self.engine.fraud_tick(now)
            if sends and self.send is not None:
                self.send(sends)
        self._report()
        try:
            if now >= self._next_poll:
                self._next_poll = now + POLL_S
                self.keeper.poll(now)
            self.keeper.flush(now)
        except Exception as e:  # the store failing must not stop the watch
            log.error("fraud_persist_failed", error=str(e))

    def _report(self) -> None:
        events = self.watch.events
        off = self.watch.wall_offset
        while events:
            alert = events.popleft()
            body = alert_view(alert, off)
            self.alerts[(alert.gateway, alert.rule, alert.level.value)] += 1
            # `level` is the log line's own: the alert's goes as `alert_level`.
            log.warning("fraud_alert", alert_level=body["level"],
                        **{k: v for k, v in body.items() if k != "level"})
            if self.webhook is not None:
                self.webhook.post({"event": "fraud_alert", **body})

    # ------------------------------------------------------------------ admin

    def view(self, limit: int = 200) -> dict[str, Any]:
        out = view(self.watch, self.clock(), limit)
        if self.webhook is not None:
            out["webhook"] = dict(self.webhook.figures)
        if self.cluster is not None:
            out["cluster"] = self.cluster.stats()
        return out

    def readiness(self) -> dict[str, Any] | None:
        """Shared with the cluster, or counting alone (None: no cluster)."""
        return None if self.cluster is None else self.cluster.readiness()

    def clear(self, gateway: str, rule: str, by: str, note: str = "") -> list[dict[str, Any]]:
        now = self.clock()
        cleared = self.keeper.clear(gateway, rule, by, note, now)
        return [{"gateway": c.gateway, "rule": c.rule, "by": c.by, "lifted_block": c.lifted}
                for c in cleared]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
