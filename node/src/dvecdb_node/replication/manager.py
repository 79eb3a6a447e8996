"""The replication state machine of one node: role transitions, epochs, ack waits, status.

It is the node's :class:`~dvecdb_node.role.ClusterHooks`. Transitions (promote, follow,
fence, learning of a higher epoch) are serialised, persist the new epoch before acting on it,
and always stop writes first: a leader that sees a higher epoch turns ``standby`` at once and
fails the writes still waiting for acknowledgements.

It also keeps the leader lease (``lease``): ``role.lease_until`` is the later of the
operator's last confirmation (promote counts as one) and the majority of followers' acks,
each running from the lease token it echoes, plus ``lease_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from dvecdb_node.credentials import CredentialStore
from dvecdb_node.errors import Conflict, InvalidInput, NotLeader, NotReady
from dvecdb_node.replication import acks, lease
from dvecdb_node.replication.epochs import (
    Command,
    EpochState,
    EpochStore,
    admin_refusal,
    peer_refusal,
)
from dvecdb_node.replication.follower import Follower, FollowerOptions
from dvecdb_node.replication.tracker import FollowerTracker
from dvecdb_node.role import NodeRole
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.engine import Engine
from dvecdb_node.storage.records import Noop

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """Why a member refuses data reads: the error code and message of the 503 answer."""

    code: str
    message: str


NOT_AGREED = ReadBlock(
    "not_agreed",
    "this member's log may hold records no leader acknowledged (a deposed leader, or a member "
    "not yet reconciled with the current leader): it serves no data until it has reconciled",
)
RECONCILING = ReadBlock(
    "reconciling", "this follower is cutting back or replacing a log that differs from its leader's"
)


def read_staleness_block(heard: float | None, now: float, max_staleness: float) -> ReadBlock | None:
    """The refusal for a member whose log last agreed with a leader at ``heard`` (None: never
    since it could have diverged), or None while that is within ``max_staleness``."""
    if heard is None:
        return NOT_AGREED
    if now - heard > max_staleness:
        return ReadBlock(
            "too_stale",
            f"this member last heard from a leader {now - heard:.0f}s ago "
            f"(max_read_staleness_seconds is {max_staleness:g})",
        )
    return None


def stale_epoch(message: str, epoch: int) -> Conflict:
    return Conflict(message, code="stale_epoch", epoch=epoch)


def may_not_persist(code: str, message: str, seq: int) -> NotReady:
    """503 for a write whose acknowledgement level was not met: it may or may not persist."""
    return NotReady(f"{message}; the write may or may not persist", code=code, seq=seq)


class ReplicationManager:
    """See the module docstring."""

    def __init__(
        self,
        settings: NodeSettings,
        engine: Engine,
        role: NodeRole,
        recovered: asyncio.Event,
        credentials: CredentialStore | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # Verifies other members against the cluster CA and presents ours (None: plain HTTP).
        self.ssl_context = ssl_context
        self.settings = settings
        # What this member sends to others: the first cluster token in force.
        self.credentials = credentials or CredentialStore(
            settings.credentials(), settings.secrets_dir
        )
        self.engine = engine
        self.role = role
        self.recovered = recovered
        self.store = EpochStore(settings.data_dir)
        self.state = EpochState()
        self.tracker = FollowerTracker(settings.replication_retention_seconds)
        self.clock = acks.WriteClock(capacity=100_000)
        self.follower: Follower | None = None
        self.members_hint = 0
        # Lease ends (monotonic): from the operator's confirmations and the followers' acks.
        self._operator_lease = -math.inf
        self._follower_lease = -math.inf
        # When this member last heard from a leader its log agreed with (see read_block);
        # None while its log may hold records no leader acknowledged.
        self._agreed_heard: float | None = None
        # When this member last acked a leader with a lease token (followers since stopped);
        # before its first ack, the process start (any earlier ack was before it).
        self._last_token_ack = time.monotonic()
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    # -------------------------------------------------------------- lifecycle
    def load(self) -> None:
        """Read the persisted epoch (the node still boots in standby)."""
        self.state = self.store.load()
        self.role.epoch = max(self.role.epoch, self.state.epoch)
        self.engine.retention_floors.append(self.tracker.retention_floor)

    async def close(self) -> None:
        await self._stop_follower()
        self.tracker.fail_waiters(NotReady("the node is shutting down", code="shutting_down"))
        if self._session is not None:
            await self._session.close()

    def _ssl(self) -> ssl.SSLContext | bool:
        return True if self.ssl_context is None else self.ssl_context

    def _auth(self) -> dict[str, str]:
        token = self.credentials.current.cluster_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl()))
        return self._session

    # ------------------------------------------------------------ transitions
    def _check(self, command: Command, epoch: int) -> None:
        current = EpochState(
            epoch=max(self.state.epoch, self.role.epoch),
            role=self.state.role,
            leader=self.state.leader,
        )
        refusal = admin_refusal(command, epoch, current)
        if refusal:
            raise stale_epoch(refusal, current.epoch)

    def _persist(self, state: EpochState) -> None:
        self.store.save(state)
        self.state = state

    async def _require_recovered(self) -> None:
        await self.recovered.wait()
        if not self.engine.ready:
            raise NotReady("the store did not recover", code="not_ready")

    def _step_down(self, reason: str) -> None:
        """Stop taking writes now (no I/O): role standby, pending acks fail."""
        if self.role.is_leader:
            log.warning("leader at epoch %d steps down: %s", self.role.epoch, reason)
            self.role.role = "standby"
            self.role.leader_url = None
            # Its log may end in records nobody acknowledged: no reads until it reconciles.
            self._agreed_heard = None
        self.tracker.fail_waiters(
            NotReady(f"leadership lost: {reason}; the write may or may not persist",
                     code="leadership_lost")
        )  # fmt: skip

    async def promote(
        self, epoch: int, members: int | None = None, token: int | None = None
    ) -> None:
        """Lead at ``epoch``; the promote confirms the lease as of ``token`` (see ``lease``)."""
        async with self._lock:
            self._check("promote", epoch)
            if self.role.is_leader and self.role.epoch == epoch:
                self.members_hint = members or self.members_hint
                self._confirmed(token)  # a promote is the operator confirming the epoch
                return  # a retry: already leading at this epoch
            await self._require_recovered()
            await self._stop_follower()
            self._persist(EpochState(epoch, "leader", self.settings.self_url))
            if epoch != self.role.epoch or not self.role.is_leader:
                self.tracker.reset()
                self.clock.clear()
            self.members_hint = members or 0
            self._follower_lease = -math.inf
            self._operator_lease = -math.inf
            self._confirmed(token)
            self.role.epoch = epoch
            self.role.leader_url = self.settings.self_url
            self.role.role = "leader"
            # Open the epoch in the log: followers learn it, and agreement checks find it.
            # Opened whatever the lease: the Noop is acknowledged to nobody.
            result = await self.engine.submit(
                Noop(), epoch=epoch, check=lambda e: self.role.require_epoch(e, lease=False)
            )
            self.clock.record(result.seq, time.monotonic())
            log.info("promoted to leader at epoch %d (last_seq %d)", epoch, result.seq)

    async def follow(self, leader: str, epoch: int) -> None:
        leader = leader.rstrip("/")
        if not leader.startswith(("http://", "https://")):
            raise InvalidInput("leader must be an http(s) URL", code="invalid_leader")
        if leader == self.settings.self_url:
            raise InvalidInput("a node cannot follow itself", code="invalid_leader")
        async with self._lock:
            self._check("follow", epoch)
            current = self.follower
            if (
                current is not None
                and current.running
                and current.leader_url == leader
                and self.role.role == "follower"
                and self.role.epoch == epoch
            ):
                return  # a retry: already following this leader at this epoch
            self._step_down(f"told to follow {leader} at epoch {epoch}")
            await self._stop_follower()
            self._persist(EpochState(epoch, "follower", leader))
            self.role.epoch = epoch
            self.role.leader_url = leader
            self.role.role = "follower"
            await self._require_recovered()
            self._start_follower(leader, epoch)
            log.info("following %s at epoch %d", leader, epoch)

    async def fence(self, epoch: int) -> None:
        # Answered once the store has recovered: the answer's positions are what the operator
        # chooses the new leader by, and before recovery they read 0.
        await self._require_recovered()
        async with self._lock:
            self._check("fence", epoch)
            self._step_down(f"fenced at epoch {epoch}")
            await self._stop_follower()
            self._persist(EpochState(epoch, "fenced", None))
            self.role.epoch = epoch
            self.role.role = "standby"
            self.role.leader_url = None
            log.info("fenced at epoch %d", epoch)

    # ----------------------------------------------------------------- lease
    def _set_lease(self) -> None:
        if self.settings.standalone:
            self.role.lease_until = math.inf
        else:
            self.role.lease_until = max(self._operator_lease, self._follower_lease)

    def _confirmed(self, token: int | None) -> None:
        """The operator confirmed this leader's epoch, as of ``token`` (now when None)."""
        mark = lease.token_time(token, time.monotonic())
        self._operator_lease = max(self._operator_lease, mark + self.settings.lease_seconds)
        self._set_lease()

    def confirm(self, epoch: int, token: int | None = None) -> None:
        """``POST /v1/admin/confirm``: renew the operator lease of the leader at ``epoch``."""
        if epoch < self.role.epoch:
            raise stale_epoch(
                f"epoch {epoch} is lower than the highest seen ({self.role.epoch})",
                self.role.epoch,
            )
        if epoch > self.role.epoch:
            self.observe_epoch(epoch, "the operator's confirmation")
            raise NotLeader(None, f"this member does not lead at epoch {epoch}")
        if not self.role.is_leader:
            raise NotLeader(self.role.leader_url, f"this member does not lead at epoch {epoch}")
        self._confirmed(token)

    def heard_from(self, node_id: str, token: int | None) -> None:
        """A follower acked at this epoch, echoing ``token``: renew the majority lease."""
        if token is None:
            return  # a follower that echoes no token proves nothing about when it followed
        self.tracker.heard(node_id, lease.token_time(token, time.monotonic()))
        needed = acks.followers_needed("quorum", self.members())
        self._follower_lease = lease.majority_lease(
            self.tracker.lease_marks(), needed, self.settings.lease_seconds
        )
        self._set_lease()

    def lease_status(self) -> dict[str, Any] | None:
        if not self.role.is_leader:
            return None
        now = time.monotonic()
        left = lease.remaining(self.role.lease_until, now)
        return {
            "valid": left is None or left > 0,
            "expires_in_seconds": None if left is None else round(left, 3),
            "token": lease.token_now(),
        }

    def last_ack_seconds(self) -> float:
        """Seconds since this member last acked a leader, echoing a lease token; at most
        the time since this process started (an ack before that is older still).

        That leader's lease may hold up to ``lease_seconds`` past it. So once a majority is
        fenced, a leader that was not (unreachable, not known dead) may still serve strong
        reads until ``lease_seconds`` after the most recent of the fenced members' acks: an
        operator waits that long before promoting, or strong reads may miss new writes.
        """
        last = self._last_token_ack
        if self.follower is not None:
            last = max(last, self.follower.last_token_ack)
        return time.monotonic() - last

    def observe_epoch(self, epoch: int, source: str) -> None:
        """A peer carries ``epoch``: a higher one ends this node's leadership at once."""
        if epoch <= self.role.epoch:
            return
        self._step_down(f"{source} carries epoch {epoch}")
        role = "follower" if self.role.role == "follower" else "standby"
        leader = self.role.leader_url if role == "follower" else None
        self._persist(EpochState(epoch, role, leader))
        self.role.epoch = epoch
        if self.follower is not None:
            self.follower.epoch = epoch

    def check_peer(self, epoch: int, source: str) -> None:
        """Refuse a lower epoch; learn a higher one (and then refuse: this node no longer leads)."""
        refusal = peer_refusal(epoch, self.role.epoch)
        if refusal:
            raise stale_epoch(refusal, self.role.epoch)
        self.observe_epoch(epoch, source)

    # -------------------------------------------------------------- follower
    def _start_follower(self, leader: str, epoch: int) -> None:
        self.follower = Follower(
            engine=self.engine,
            leader_url=leader,
            epoch=epoch,
            node_id=self.settings.node_id,
            self_url=self.settings.self_url,
            auth=self._auth,
            ssl_context=self.ssl_context,
            on_epoch=lambda e: self.observe_epoch(e, f"leader {leader}"),
            # Acks renew the leader's lease: several per lease even when nothing is written.
            options=FollowerOptions(ack_interval=min(1.0, self.settings.lease_seconds / 4)),
        )
        self.follower.start()

    async def _stop_follower(self) -> None:
        follower, self.follower = self.follower, None
        if follower is not None:
            await follower.stop()
            self._last_token_ack = max(self._last_token_ack, follower.last_token_ack)
            if follower.diverged:
                self._agreed_heard = None
            elif follower.reconciled:
                self._agreed_heard = max(self._agreed_heard or 0.0, follower.last_heard)

    @property
    def read_block(self) -> ReadBlock | None:
        """Why data reads must be refused now, or None when this member may serve them.

        DESIGN.md "Reads while there is no leader": a member whose log agreed with a leader's
        (a follower whose stream the leader accepted) serves eventual reads, even once its
        stream broke or it was fenced, for ``max_read_staleness_seconds`` after it last heard
        from that leader, so a failover does not empty the read-only Service. A member whose
        log may hold records no leader acknowledged (a deposed leader; a member booted in
        standby, or told to follow, that has not reconciled yet; a follower whose leader
        found its log diverging) serves nothing until it has reconciled with the current
        leader. A leader and a ``--standalone`` node always serve. Attribute reads and at
        most one clock read: it runs once per search.
        """
        if self.role.role == "leader" or self.settings.standalone:
            return None
        heard = self._agreed_heard
        follower = self.follower
        if follower is not None:
            if follower.diverged:
                return RECONCILING
            if follower.reconciled:
                if follower.streaming:
                    return None
                heard = follower.last_heard
        return read_staleness_block(
            heard, time.monotonic(), self.settings.max_read_staleness_seconds
        )

    @property
    def reads_blocked(self) -> bool:
        """Data reads are refused (see :attr:`read_block` for the code and message)."""
        return self.read_block is not None

    # ------------------------------------------------------------ ClusterHooks
    def members(self) -> int:
        return acks.member_count(
            cluster_size=max(self.settings.cluster_size, self.members_hint),
            known_followers=self.tracker.known(),
            standalone=self.settings.standalone,
        )

    def _trim_clock(self) -> None:
        """Forget write times every tracked follower has applied past."""
        followers = self.tracker.all()
        if followers:
            self.clock.trim_through(min(f.applied_seq for f in followers))

    async def wait_ack(self, seq: int, ack: str) -> None:
        self.clock.record(seq, time.monotonic())
        if len(self.clock) > 4096:
            self._trim_clock()
        needed = acks.followers_needed(ack, self.members())
        if needed == 0:
            return
        if not self.role.is_leader:
            raise may_not_persist("leadership_lost", "this node stopped leading", seq)
        timeout = self.settings.ack_timeout_seconds
        if not await self.tracker.wait_acked(seq, needed, timeout):
            have = self.tracker.count_acked(seq)
            raise may_not_persist(
                "ack_timeout",
                f"ack={ack} needs {needed} follower(s) to hold seq {seq} durably, "
                f"{have} did within {timeout:g}s",
                seq,
            )

    async def confirm_leadership(self) -> None:
        """Ask followers directly whether they still follow this leader at its epoch."""
        epoch = self.role.require_lease()
        needed = acks.followers_needed("quorum", self.members())
        if needed == 0:
            return
        urls = [f.url for f in self.tracker.all() if f.url]
        timeout = aiohttp.ClientTimeout(total=min(2.0, self.settings.ack_timeout_seconds))
        session = self._http()

        async def ask(url: str) -> int | None:
            try:
                async with session.get(
                    f"{url}/v1/status", timeout=timeout, headers=self._auth()
                ) as resp:
                    body = await resp.json()
                    if resp.status != 200 or not isinstance(body, dict):
                        return None
                    return int(body["epoch"]) if body.get("role") == "follower" else -1
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
                return None

        epochs = await asyncio.gather(*(ask(url) for url in urls))
        for seen in epochs:
            if seen is not None and seen > epoch:
                self.observe_epoch(seen, "a follower")
        self.role.require_leader()
        agreeing = sum(1 for seen in epochs if seen == epoch)
        if agreeing < needed:
            raise NotReady(
                f"only {agreeing} of the {needed} followers needed confirm epoch {epoch}",
                code="no_quorum",
            )

    def commit_seq(self, durable_seq: int) -> int:
        """The highest seq this leader and enough followers hold durably for a majority
        (the ``quorum`` count); 0 while too few followers are known."""
        needed = acks.followers_needed("quorum", self.members())
        if needed == 0:
            return durable_seq
        held = sorted((f.received_seq for f in self.tracker.all()), reverse=True)
        if len(held) < needed:
            return 0
        return min(durable_seq, held[needed - 1])

    def followers(self) -> list[dict[str, Any]]:
        """Per-follower positions for ``/v1/status`` and metrics: a plain read (the write
        clock is trimmed on the write path, :meth:`wait_ack`)."""
        now = time.monotonic()
        last = self.engine.last_seq
        out: list[dict[str, Any]] = []
        for f in self.tracker.all():
            out.append(
                {
                    "node_id": f.node_id,
                    "url": f.url,
                    "connected": f.streams > 0,
                    "received_seq": f.received_seq,
                    "applied_seq": f.applied_seq,
                    "lag_seq": acks.lag_seq(last, f.applied_seq),
                    "lag_seconds": round(self.clock.lag_seconds(f.applied_seq, last, now), 6),
                    "last_contact_seconds": round(now - f.last_contact, 3),
                }
            )
        return out

    def not_ready_reason(self) -> str | None:
        """Why ``/readyz`` fails beyond recovery: the member refuses data reads (see
        :attr:`read_block`), or it streams with a lag above its bound."""
        block = self.read_block
        if block is not None:
            return block.message
        follower = self.follower
        if follower is None or not follower.streaming:
            return None
        lag = acks.lag_seq(follower.leader_last_seq, self.engine.applied_seq)
        if lag > self.settings.max_ready_lag_seq:
            return f"replication lag {lag} exceeds {self.settings.max_ready_lag_seq}"
        return None

    def replication_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "node_id": self.role.node_id,
            "role": self.role.role,
            "epoch": self.role.epoch,
            "persisted": {
                "epoch": self.state.epoch,
                "role": self.state.role,
                "leader": self.state.leader,
            },
            "last_seq": self.engine.last_seq,
            "last_epoch": self.engine.last_epoch,
            "applied_seq": self.engine.applied_seq,
            "members": self.members(),
        }
        if self.follower is not None:
            body["follower"] = self.follower.describe()
        if self.role.is_leader:
            body["followers"] = self.followers()
        return body
