"""From a validated Config to the engine and its collaborators: gateway table,
digest verifier, registrar, and the SQLite store that keeps registrations
across restarts. The server owns the result; nothing here touches sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from dataclasses import dataclass

from .config import Config
from .core.auth import Account, DigestAuth, account_from_ha1, account_from_password
from .core.engine import Engine
from .core.gateways import GatewayTable, gateway_infos
from .core.registrar import Binding, Registrar
from .core.settings import ProxySettings
from .logsetup import get_logger
from .store import Store, from_rows, to_rows

log = get_logger("sbc.wiring")


@dataclass
class Components:
    engine: Engine
    store: Store
    loop: asyncio.AbstractEventLoop

    def save_bindings(self, aor: str, bindings: list[Binding]) -> None:
        self.store.save_bindings(aor, to_rows(bindings, self.loop.time(), time.time()))

    def housekeeping(self, now: float) -> None:
        """Periodic: expire registrations (and persist), age the offense table."""
        engine = self.engine
        if engine.registrar is not None:
            for aor in engine.registrar.expire(now):
                self.save_bindings(aor, engine.registrar.bindings(aor))
        engine.offenses.expire(now)

    def close(self) -> None:
        self.store.close()


def accounts(cfg: Config) -> list[Account]:
    out = []
    for gw in cfg.gateways:
        for acc in gw.digest:
            realm = cfg.realm_for(acc)
            cidrs = tuple(ipaddress.ip_network(c) for c in acc.from_cidrs)
            if acc.password is not None:
                out.append(account_from_password(acc.username, realm, gw.name,
                                                 acc.password.get_secret_value(), cidrs))
            else:
                out.append(account_from_ha1(
                    acc.username, realm, gw.name,
                    acc.ha1_md5.get_secret_value() if acc.ha1_md5 else None,
                    acc.ha1_sha256.get_secret_value() if acc.ha1_sha256 else None, cidrs))
    return out


def build_components(cfg: Config, loop: asyncio.AbstractEventLoop) -> Components:
    infos, egresses = gateway_infos(cfg)
    settings = ProxySettings.from_config(cfg, egresses=tuple(egresses[1:]))
    table = GatewayTable((gw.name, gw.ip, gw.ip_port) for gw in cfg.gateways)
    digest_accounts = accounts(cfg)
    auth = DigestAuth(digest_accounts, secret=os.urandom(32), realm=cfg.auth.realm,
                      nonce_ttl=cfg.auth.nonce_ttl_s, algorithms=[a.value for a in cfg.auth.algorithms])
    r = cfg.registrar
    registrar = Registrar(min_expires=r.min_expires_s, max_expires=r.max_expires_s,
                          default_expires=r.default_expires_s, max_contacts=r.max_contacts)
    store = Store(cfg.state.path)
    mono, wall = loop.time(), time.time()
    registrar.load(from_rows(store.load_bindings(wall), mono, wall), mono)
    engine = Engine(settings, gateways=table, gateway_info={i.name: i for i in infos},
                    auth=auth, registrar=registrar)
    parts = Components(engine, store, loop)
    engine.on_bindings = parts.save_bindings
    log.info("state_loaded", path=cfg.state.path, bindings=len(registrar),
             gateways=len(table), accounts=len(digest_accounts))
    return parts
