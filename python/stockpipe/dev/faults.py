"""The fault suite's scenarios: what each one does to the running pipeline, and when.

A scenario's ``inject`` runs on the harness's thread while the pipeline streams (``chaos.Run``):
it waits, marks the fault's start and end (``run.begin()`` / ``run.end()``) and acts on brokers,
sinks, producers or the S3 server in between. The harness (``stockpipe.dev.chaos``) starts
everything, calls it, and checks every record against the simulator's ledger afterwards.
"""

from __future__ import annotations

import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stockpipe.dev.chaos import Run


@dataclass
class Scenario:
    name: str
    what: str
    inject: Callable[[Run], None]
    duration: float = 30.0
    rate: int = 2000
    sim_args: list[str] = field(default_factory=list)
    producer_args: list[str] = field(default_factory=list)
    sinks: int = 1
    sink_after: bool = False
    s3_proxy: bool = False
    control: bool = False
    topic_config: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    """An HTTP/1.1 proxy in front of the S3 server that reads each request whole and can answer chosen
    ones itself. ``fail(True)``: every request gets 503 SlowDown. ``fail_puts``: every PUT does, while
    reads still work. ``conflict_claims(n)``: the next ``n`` conditional PUTs of sink claims get 409
    ConditionalRequestConflict (what S3 says to a conditional write racing another), unforwarded.
    ``drop_responses(n)``: the next ``n`` PUTs (claims or data) are forwarded, and their answer is lost
    (the connection closes): an ambiguous write; ``dropped`` counts those the server had written.
    ``ignore_conditions``: every conditional PUT gets 200 unforwarded, as from a store that ignores
    ``If-None-Match``. The counters say how often each fault fired."""

    SLOW_DOWN = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )
    CONFLICT = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
        b"<Message>A conflicting operation occurred. Please retry.</Message></Error>"
    )

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self._lock = threading.Lock()
        self.failing = False
        self.fail_puts = False
        self.ignore_conditions = False
        self._conflicts_left = 0
        self._drops_left = 0
        #: Requests answered 503 (``fail``, ``fail_puts``), 409 (``conflict_claims``), and PUTs whose
        #: answer was dropped; requests forwarded and answered.
        self.answered = 0
        self.conflicts = 0
        self.dropped = 0
        self.forwarded = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def fail(self, on: bool) -> None:
        self.failing = on

    def conflict_claims(self, n: int) -> None:
        with self._lock:
            self._conflicts_left = n

    def drop_responses(self, n: int) -> None:
        with self._lock:
            self._drops_left = n

    def close(self) -> None:
        self._closed = True
        self.server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _take(self, counter: str) -> bool:
        """Uses one of the faults left in `counter` (``_conflicts_left``, ``_drops_left``)."""
        with self._lock:
            left = getattr(self, counter)
            if left > 0:
                setattr(self, counter, left - 1)
            return bool(left > 0)

    def _fault(self, method: bytes, path: bytes, headers: dict[str, str]) -> bytes | None:
        """The answer the proxy gives itself, b"drop" to forward and lose the answer, or None."""
        conditional = method == b"PUT" and "if-none-match" in headers
        if self.failing or (method == b"PUT" and self.fail_puts):
            with self._lock:
                self.answered += 1
            return self._answer(b"503 Slow Down", self.SLOW_DOWN)
        if conditional and self.ignore_conditions:
            return b'HTTP/1.1 200 OK\r\nETag: "0"\r\nContent-Length: 0\r\n\r\n'
        if conditional and b"/_stockpipe/claims/" in path and self._take("_conflicts_left"):
            with self._lock:
                self.conflicts += 1
            return self._answer(b"409 Conflict", self.CONFLICT)
        if method == b"PUT" and self._take("_drops_left"):
            return b"drop"
        return None

    @staticmethod
    def _answer(status: bytes, body: bytes) -> bytes:
        return (
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: application/xml\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    @staticmethod
    def _read_head(f: Any) -> tuple[bytes, dict[str, str]] | None:
        """The start line and headers of one HTTP message, and the headers by lower-case name."""
        head = b""
        while True:
            line = f.readline(65537)
            if not line:
                return None
            head += line
            if line in (b"\r\n", b"\n"):
                break
        headers = {}
        for raw in head.decode("latin-1").split("\r\n")[1:]:
            if ":" in raw:
                k, v = raw.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return head, headers

    @staticmethod
    def _read_body(f: Any, headers: dict[str, str], until_close: bool) -> bytes:
        if "content-length" in headers:
            return bytes(f.read(int(headers["content-length"])))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body: bytes = b""
            while True:
                size_line = bytes(f.readline())
                body += size_line
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := bytes(f.readline())) not in (b"\r\n", b"\n", b""):
                        body += trailer
                    return body + b"\r\n"
                body += f.read(size + 2)
        return bytes(f.read()) if until_close else b""

    def _serve(self, client: Any) -> None:
        upstream = None
        try:
            cf = client.makefile("rb")
            while not self._closed:
                got = self._read_head(cf)
                if got is None:
                    return
                head, headers = got
                method, path = head.split(b" ", 2)[:2]
                if headers.get("expect", "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    kept = [ln for ln in head.split(b"\r\n") if ln and not ln.lower().startswith(b"expect:")]
                    head = b"\r\n".join(kept) + b"\r\n\r\n"
                body = self._read_body(cf, headers, until_close=False)
                fault = self._fault(method, path, headers)
                if fault is not None and fault != b"drop":
                    client.sendall(fault)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream))
                    uf = upstream.makefile("rb")
                upstream.sendall(head + body)
                answer = self._read_head(uf)
                if answer is None:
                    return
                r_head, r_headers = answer
                status = int(r_head.split(b" ", 2)[1])
                no_body = method == b"HEAD" or status in (204, 304)
                r_body = b"" if no_body else self._read_body(uf, r_headers, until_close=True)
                if fault == b"drop":
                    if 200 <= status < 300:
                        with self._lock:
                            self.dropped += 1
                    return  # the client never hears what became of its request
                client.sendall(r_head + r_body)
                with self._lock:
                    self.forwarded += 1
        except (OSError, ValueError, IndexError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()


# -- the scenarios ---------------------------------------------------------------------------------


def _leader_name(run: Run) -> str:
    return f"kafka-{run.chaos.wait_leader(run.topic)}"


def leader_kill9_x5(run: Run) -> None:
    run.pause(4)
    run.begin()
    for _ in range(5):
        victim = _leader_name(run)
        run.chaos.kill9(victim)
        run.pause(2)
        run.chaos.start(victim)  # returns once its port is open (a JVM start: ~5 s)
        run.pause(1)
    run.end()


def broker_sigstop_30s(run: Run) -> None:
    run.pause(4)
    victim = _leader_name(run)
    run.begin()
    run.chaos.sig(victim, signal.SIGSTOP)
    run.pause(30)
    run.chaos.sig(victim, signal.SIGCONT)
    run.end()


def rolling_restart(run: Run) -> None:
    run.pause(4)
    run.begin()
    for node in (1, 2, 3):
        run.chaos.stop(f"kafka-{node}", grace=60)  # a controlled shutdown moves leadership first
        run.chaos.start(f"kafka-{node}")
        run.chaos.wait_isr(run.topic)
    run.end()


def sink_kill9_x5(run: Run) -> None:
    run.pause(3)
    run.begin()
    for _ in range(5):
        run.pause(random.uniform(1.0, 4.0))
        run.sinks[-1].kill()
        run.start_sink()
    run.end()


def two_sinks_one_killed(run: Run) -> None:
    run.pause(6)
    run.begin()
    run.sinks[0].kill()
    run.end()


def rebalance_add_sink(run: Run) -> None:
    run.pause(6)
    run.begin()
    run.start_sink()
    run.end()


def s3_stopped_30s(run: Run) -> None:
    run.pause(4)
    run.begin()
    run.chaos.stop("s3")
    run.pause(30)
    run.chaos.start("s3")
    run.end()


def _proxy_fault(
    run: Run, start: Callable[[FaultProxy], None], fired: Callable[[FaultProxy], int], what: str, seconds: float
) -> None:
    """Starts a fault of the S3 proxy, lets it act for `seconds`, and records how often it fired."""
    proxy = run.s3_proxy
    assert proxy is not None
    run.pause(4)
    run.begin()
    start(proxy)
    run.pause(seconds)
    proxy.fail(False)
    run.end()
    run.faults_fired = fired(proxy)
    run.note += f"{run.faults_fired} {what}; "


def s3_slowdown(run: Run) -> None:
    _proxy_fault(run, lambda p: p.fail(True), lambda p: p.answered, "requests answered 503 SlowDown", 15)


def s3_409_on_claims(run: Run) -> None:
    _proxy_fault(
        run,
        lambda p: p.conflict_claims(20),
        lambda p: p.conflicts,
        "claims answered 409 ConditionalRequestConflict",
        10,
    )


def s3_ambiguous_writes(run: Run) -> None:
    """PUTs (claims and data) reach the server and are written, and their answers are lost: the sink
    cannot tell a write that happened from one that did not, and must neither lose nor duplicate."""
    _proxy_fault(run, lambda p: p.drop_responses(10), lambda p: p.dropped, "written PUTs lost their answers", 10)


def sink_zombie(run: Run) -> None:
    """One of two sinks is SIGSTOPped past the session timeout while it writes, loses its partitions to
    the other, and is resumed: its late writes must not duplicate what the other wrote meanwhile."""
    run.pause(6)
    run.begin()
    run.sinks[0].signal(signal.SIGSTOP)
    run.pause(15)
    run.sinks[0].signal(signal.SIGCONT)
    run.end()


def sink_paused_rebalance(run: Run) -> None:
    """PUTs fail, so the sink pauses its partitions; a second sink joins and dies while they are
    paused, and the partitions come back to the first sink, which must read them again."""
    proxy = run.s3_proxy
    assert proxy is not None
    run.pause(4)
    run.begin()
    proxy.fail_puts = True
    run.pause(5)
    second = run.start_sink()
    joined = _wait_for_line(second, "assigned partition", 30)
    run.pause(2)
    second.kill()
    run.pause(8)
    proxy.fail_puts = False
    run.end()
    run.faults_fired = proxy.answered if joined else 0
    run.note += (
        f"{proxy.answered} PUTs answered 503 while a second sink {'joined' if joined else 'never joined'} and died; "
    )


def _wait_for_line(proc: Any, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for _, line in proc.snapshot()):
            return True
        time.sleep(0.2)
    return False


def sink_settings_change(run: Run) -> None:
    """A sink crashes right after a claim (a fail-point) and is restarted with gzip on: the claim is
    rewritten as it was made (plain JSONL), later batches are gzipped."""
    run.pause(4)
    run.begin()
    run.sinks[-1].kill()
    crashing = run.start_sink(STOCKPIPE_FAILPOINT="after_claim:3")
    crashing.wait(60)
    restarted = run.start_sink(STOCKPIPE_SINK_GZIP="true")
    _wait_for_line(restarted, "honouring an existing claim", 30)
    run.end()
    run.faults_fired = sum("honouring an existing claim" in line for _, line in restarted.snapshot())
    run.note += f"{run.faults_fired} claims honoured after the crash, with gzip on; "


def ws_inherent(first_fault_s: float) -> Callable[[Run], None]:
    """Faults the simulator injects itself; the first comes ``first_fault_s`` after the start."""

    def inject(run: Run) -> None:
        if first_fault_s > 0:
            run.fault_start = run.started + first_fault_s
            run.fault_end = run.started + first_fault_s

    return inject


def producer_sigterm(run: Run) -> None:
    run.pause(8)
    run.begin()
    run.producers[0].stop(60)
    run.note += "trades the simulator sent after the SIGTERM were never read (not acked, not counted lost); "
    run.start_producer()
    run.end()


def producer_kill9(run: Run) -> None:
    run.pause(8)
    run.begin()
    run.producers[0].kill()
    run.start_producer()
    run.end()
    run.note += "kill -9 loses what was read but not yet acked (frame → ack); see docs/reliability.md; "


def control_idempotence_off(run: Run) -> None:
    """The follower pauses: the leader has appended each batch but cannot complete acks=all, so it
    answers REQUEST_TIMED_OUT after the request timeout and the producer sends the batch again."""
    run.pause(4)
    run.begin()
    for _ in range(4):
        leader, replicas, _ = run.chaos.replicas(run.topic)
        victim = f"kafka-{next(r for r in replicas if r != leader)}"
        run.chaos.sig(victim, signal.SIGSTOP)
        run.pause(4)
        run.chaos.sig(victim, signal.SIGCONT)
        run.pause(2)
    run.end()


def control_both_replicas_lost(run: Run) -> None:
    """RF 2, min.insync.replicas 1: the follower dies, the leader alone acks, then the leader dies."""
    chaos = run.chaos
    run.pause(3)
    leader, replicas, _ = chaos.replicas(run.topic)
    follower = next(r for r in replicas if r != leader)
    run.begin()
    chaos.kill9(f"kafka-{follower}")
    # Once the controller fences the follower (broker.session.timeout.ms, 9 s) the ISR is the
    # leader alone, which then acknowledges by itself (min.insync.replicas 1).
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if chaos.replicas(run.topic)[2] == [leader]:
                break
        except Exception:  # noqa: BLE001 - metadata can time out while the cluster notices the loss
            pass
        time.sleep(0.5)
    run.pause(6)
    for p in run.producers:
        p.stop()
    chaos.kill9(f"kafka-{leader}")  # both replicas of partition 0 are gone
    chaos.start(f"kafka-{follower}")
    from confluent_kafka import ElectionType, TopicPartition

    elected = False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not elected:
        try:
            chaos.admin().elect_leaders(ElectionType.UNCLEAN, [TopicPartition(run.topic, 0)]).result()
        except Exception:  # noqa: BLE001 - the quorum is still forming
            pass
        try:
            elected = chaos.replicas(run.topic)[0] == follower
        except Exception:  # noqa: BLE001
            pass
        time.sleep(1)
    if not elected:
        run.note += "the unclean election did not happen; "
    chaos.start(f"kafka-{leader}")  # comes back as a follower and truncates to the new leader
    chaos.wait_isr(run.topic)
    run.end()


SCENARIOS: list[Scenario] = [
    Scenario("leader-kill9-x5", "partition leader broker kill -9 during produce, 5 times", leader_kill9_x5, 90),
    Scenario("broker-sigstop-30s", "partition leader SIGSTOP for 30 s", broker_sigstop_30s, 45),
    Scenario("rolling-restart", "rolling restart of all three brokers", rolling_restart, 50),
    Scenario("sink-kill9-x5", "sink kill -9 at random moments, 5 times", sink_kill9_x5, 30),
    Scenario("two-sinks-one-killed", "two sinks in one group, one killed", two_sinks_one_killed, 25, sinks=2),
    Scenario("rebalance-add-sink", "a second sink joins the group", rebalance_add_sink, 25),
    Scenario("s3-stopped-30s", "S3 server stopped for 30 s", s3_stopped_30s, 45),
    Scenario("s3-503-slowdown", "S3 answers 503 SlowDown for 15 s (proxy)", s3_slowdown, 30, s3_proxy=True),
    Scenario("s3-409-claims", "S3 answers 409 to 20 claims (proxy)", s3_409_on_claims, 25, s3_proxy=True),
    Scenario(
        "s3-ambiguous-writes", "10 written PUTs lose their answers (proxy)", s3_ambiguous_writes, 25, s3_proxy=True
    ),
    Scenario("sink-zombie", "one of two sinks SIGSTOPped for 15 s, then resumed", sink_zombie, 30, sinks=2),
    Scenario(
        "sink-paused-rebalance",
        "PUTs fail; a second sink joins and dies while partitions are paused",
        sink_paused_rebalance,
        35,
        s3_proxy=True,
    ),
    Scenario("sink-settings-change", "sink kill -9, restarted with gzip on", sink_settings_change, 25),
    Scenario(
        "ws-drop-no-close",
        "WebSocket dropped without a close frame",
        ws_inherent(5),
        20,
        sim_args=["--disconnect-every-s", "5", "--disconnect-kinds", "noclose,reset"],
    ),
    Scenario(
        "ws-half-open",
        "WebSocket half-open: silence, no close",
        ws_inherent(5),
        20,
        sim_args=["--disconnect-every-s", "5", "--disconnect-kinds", "silent"],
        producer_args=["--silence-timeout-s", "2"],
    ),
    Scenario("ws-duplicates", "duplicate frames", ws_inherent(0), 15, sim_args=["--duplicate-rate", "0.05"]),
    Scenario(
        "ws-out-of-order",
        "frames with times going backwards",
        ws_inherent(0),
        15,
        sim_args=["--out-of-order-rate", "0.1"],
    ),
    Scenario("ws-malformed", "malformed frames", ws_inherent(0), 15, sim_args=["--malformed-rate", "0.1"]),
    Scenario(
        "ws-429-upgrade",
        "HTTP 429 at the WebSocket upgrade",
        ws_inherent(0.01),
        15,
        sim_args=["--reject-upgrades", "2", "--reject-status", "429"],
        producer_args=["--rate-limited-backoff-s", "1"],
    ),
    Scenario("producer-sigterm", "producer stopped with SIGTERM, restarted", producer_sigterm, 20),
    Scenario("producer-kill9", "producer killed with kill -9, restarted", producer_kill9, 20),
    Scenario(
        "control-idempotence-off",
        "CONTROL: idempotence off, a follower paused 4× (acks=all times out → retries)",
        control_idempotence_off,
        35,
        producer_args=["--no-idempotence", "--librdkafka", "request.timeout.ms=1500,retry.backoff.ms=50"],
        control=True,
    ),
    Scenario(
        "control-both-replicas-lost",
        "CONTROL: RF 2, min.insync.replicas 1, both replicas of a partition lost",
        control_both_replicas_lost,
        40,
        sink_after=True,
        control=True,
    ),
]
