"""Lifecycle operations: each runs its command only when the state calls for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from xenwam.drbd.device import DrbdDevice, Progress
from xenwam.drbd.resource import Host, Resource
from xenwam.errors import DrbdError
from xenwam.runner import CommandResult

pytestmark = pytest.mark.unit

RES = Resource(
    name="r0", minor=0,
    hosts=(Host("hosta", "10.99.0.1", 7789, "/dev/loop0", "/dev/loop1"),
           Host("hostb", "10.99.0.2", 7789, "/dev/loop0", "/dev/loop1")),
    shared_secret="device-test-secret",
)

HEAD = "version: 8.4.11 (api:1/proto:86-101)\n"


def proc(cs: str, ro: str = "Secondary/Secondary", ds: str = "UpToDate/UpToDate",
         oos: int = 0, extra: str = "") -> str:
    if cs == "Unconfigured":
        return HEAD
    return (f"{HEAD} 0: cs:{cs} ro:{ro} ds:{ds} A r-----\n"
            f"    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:{oos}\n"
            + extra)


@dataclass
class Runner:
    """Scripted runner: an optional (exit, stderr) per call; records argv."""

    answers: list[tuple[int, str]] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], **kw: object) -> CommandResult:
        self.calls.append(list(argv))
        status, err = self.answers.pop(0) if self.answers else (0, "")
        if status and kw.get("check", True):
            from xenwam.errors import CommandError
            raise CommandError(err)
        return CommandResult(tuple(argv), status, "", err, 0.0)


def device(states: list[str], runner: Runner | None = None,
           res: Resource = RES) -> tuple[DrbdDevice, Runner]:
    r = runner or Runner()
    seq = list(states)

    def read() -> str:
        return seq.pop(0) if len(seq) > 1 else seq[0]

    t = [0.0]

    def sleep(s: float) -> None:
        t[0] += s

    return DrbdDevice(res, runner=r, read_proc=read, clock=lambda: t[0], sleep=sleep), r


def test_up_from_nothing_then_noop() -> None:
    dev, r = device([proc("Unconfigured")])
    dev.up()
    assert r.calls == [["drbdadm", "up", "r0"]]
    dev, r = device([proc("Connected")])
    dev.up()
    assert r.calls == []


def test_up_repairs_a_half_up_resource() -> None:
    dev, r = device([proc("StandAlone", ds="Diskless/DUnknown")])
    dev.up()
    assert r.calls == [["drbdadm", "attach", "r0"], ["drbdadm", "connect", "r0"]]


def test_attach_configures_an_unknown_resource_but_never_connects() -> None:
    dev, r = device([proc("Unconfigured")])
    dev.attach()
    assert r.calls == [["drbdadm", "new-resource", "r0"], ["drbdadm", "new-minor", "r0"],
                       ["drbdadm", "attach", "r0"]]
    dev, r = device([proc("StandAlone")])
    dev.attach()
    assert r.calls == []


def test_generations_read_only_from_an_attached_disk() -> None:
    gi = "14F4E53CBE25B5FA:0000000000000000:516220D6A5E737A2:4A30764AC1553870:1:1:0:0:0:0:0"

    class GiRunner(Runner):
        def run(self, argv: Sequence[str], **kw: object) -> CommandResult:
            self.calls.append(list(argv))
            return CommandResult(tuple(argv), 0, gi + "\n", "", 0.0)

    dev, r = device([proc("Unconfigured")], GiRunner())
    assert dev.generations() is None and r.calls == []
    dev, r = device([proc("WFConnection")], GiRunner())
    g = dev.generations()
    assert g is not None and g.current == 0x14F4E53CBE25B5FA
    assert r.calls == [["drbdadm", "get-gi", "r0"]]


def test_favour_resync_gives_it_half_the_link() -> None:
    dev, r = device([proc("SyncSource")])
    dev.favour_resync()
    half = RES.wan.c_max_rate_kib // 2
    assert r.calls == [["drbdadm", "disk-options", f"--c-min-rate={half}k", "r0"]]
    assert half >= 250


def test_verify_lifts_the_resync_ceilings_while_it_runs_and_puts_them_back() -> None:
    wan = RES.wan
    dev, r = device([proc("Connected"), proc("VerifyS"),
                     proc("Connected", oos=8)])
    assert dev.verify(interval=1.0) == 8
    lifted = ["drbdadm", "disk-options", f"--c-max-rate={wan.verify_max_rate_kib}k",
              f"--c-fill-target={wan.verify_fill_target_kib}k", "r0"]
    back = ["drbdadm", "disk-options", f"--c-max-rate={wan.resync_max_rate_kib}k",
            f"--c-fill-target={wan.c_fill_target_kib}k", "r0"]
    assert r.calls == [lifted, ["drbdadm", "verify", "r0"], back]
    assert wan.verify_max_rate_kib == 64 * wan.c_max_rate_kib
    # Within drbdsetup's ranges however fast the link.
    fast = replace(wan, bandwidth_mbit=100_000.0, rtt_ms=200.0)
    assert fast.verify_max_rate_kib == 4 * 1024 * 1024
    assert fast.verify_fill_target_kib == 512 * 1024


def test_verify_puts_back_the_lifted_ceiling_of_a_checksum_resync() -> None:
    res = replace(RES, wan=replace(RES.wan, csums_alg="md5"))
    dev, r = device([proc("Connected"), proc("VerifyS"), proc("Connected")], res=res)
    assert dev.verify(interval=1.0) == 0
    assert r.calls[-1][:3] == ["drbdadm", "disk-options",
                               f"--c-max-rate={res.wan.resync_max_rate_kib}k"]
    assert res.wan.resync_max_rate_kib == 8 * res.wan.c_max_rate_kib


def test_verify_puts_the_ceilings_back_when_it_fails() -> None:
    dev, r = device([proc("Connected"), proc("WFConnection")], Runner())
    with pytest.raises(DrbdError, match="connection dropped during online verify"):
        dev.verify(interval=1.0)
    assert r.calls[-1][:3] == ["drbdadm", "disk-options",
                               f"--c-max-rate={RES.wan.resync_max_rate_kib}k"]


def test_down_detach_disconnect_are_idempotent() -> None:
    dev, r = device([proc("Unconfigured")])
    dev.down()
    dev.detach()
    dev.disconnect()
    assert r.calls == []
    dev, r = device([proc("Connected")])
    dev.disconnect()
    dev.detach()
    dev.down()
    assert [c[1] for c in r.calls] == ["disconnect", "detach", "down"]


def test_create_md_only_when_drbdmeta_says_there_is_none() -> None:
    dev, r = device([proc("Unconfigured")], Runner([(0, "")]))
    assert dev.create_md() is False
    assert r.calls == [["drbdadm", "dump-md", "r0"]]
    dev, r = device([proc("Unconfigured")], Runner([(255, "No valid meta data found")]))
    assert dev.create_md() is True
    assert r.calls[-1] == ["drbdadm", "create-md", "--force", "r0"]
    dev, r = device([proc("Unconfigured")], Runner([(20, "Device or resource busy")]))
    with pytest.raises(DrbdError, match="cannot tell whether metadata exists"):
        dev.create_md()
    assert len(r.calls) == 1  # never forced over metadata it could not read
    dev, r = device([proc("Connected")])
    assert dev.create_md() is False and r.calls == []


def test_promote_and_demote() -> None:
    dev, r = device([proc("Connected", ro="Primary/Secondary")])
    assert dev.promote() is False
    assert dev.demote() is True
    assert r.calls == [["drbdadm", "secondary", "r0"]]


def test_demote_retries_while_held_open() -> None:
    runner = Runner([(11, "State change failed: (-12) Device is held open by someone"),
                     (11, "State change failed: (-12) Device is held open by someone"),
                     (0, "")])
    dev, r = device([proc("Connected", ro="Primary/Secondary")], runner)
    assert dev.demote(interval=0.1) is True
    assert len(r.calls) == 3


def test_demote_gives_up_with_advice() -> None:
    runner = Runner([(11, "Device is held open by someone")] * 3)
    dev, _ = device([proc("Connected", ro="Primary/Secondary")], runner)
    with pytest.raises(DrbdError, match="find what holds /dev/drbd0 open"):
        dev.demote(attempts=3, interval=0.1)


def test_handover_needs_connection_and_bulk_needs_one_primary() -> None:
    dev, r = device([proc("WFConnection", ro="Primary/Unknown", ds="UpToDate/DUnknown")])
    with pytest.raises(DrbdError, match="not Connected"):
        dev.to_handover()
    dev, r = device([proc("Connected", ro="Primary/Secondary")])
    dev.to_handover()
    assert "--protocol=C" in r.calls[0]
    dev, r = device([proc("Connected", ro="Primary/Primary")])
    with pytest.raises(DrbdError, match="demote one side"):
        dev.to_bulk()
    assert r.calls == []


def test_skip_initial_sync_preconditions() -> None:
    dev, r = device([proc("Connected", ds="Inconsistent/Inconsistent")])
    assert dev.skip_initial_sync() is True
    assert r.calls == [["drbdadm", "new-current-uuid", "--clear-bitmap", "r0"]]
    dev, r = device([proc("Connected")])
    assert dev.skip_initial_sync() is False and r.calls == []
    dev, r = device([proc("WFConnection", ds="Inconsistent/DUnknown")])
    with pytest.raises(DrbdError, match="both new disks Inconsistent"):
        dev.skip_initial_sync()


def test_wait_for_sync_reports_rate_and_eta() -> None:
    states = [
        proc("SyncSource", ds="UpToDate/Inconsistent", oos=4000),
        proc("SyncSource", ds="UpToDate/Inconsistent", oos=3000),
        proc("SyncSource", ds="UpToDate/Inconsistent", oos=1000),
        proc("Connected"),
    ]
    dev, _ = device(states)
    seen: list[Progress] = []
    final = dev.wait_for_sync(interval=1.0, on_progress=seen.append)
    assert final.in_sync
    assert [p.out_of_sync_kib for p in seen] == [4000, 3000, 1000, 0]
    assert seen[1].rate_kib_s == 1000.0 and seen[1].eta_seconds == 3.0
    assert seen[1].percent == pytest.approx(25.0)
    assert seen[-1].percent == 100.0


def test_wait_for_sync_times_out_with_state() -> None:
    dev, _ = device([proc("WFConnection", ro="Primary/Unknown", ds="UpToDate/DUnknown")])
    with pytest.raises(DrbdError, match="WFConnection"):
        dev.wait_for_sync(timeout=3, interval=1)


def test_wait_connected() -> None:
    dev, _ = device([proc("WFConnection"), proc("WFConnection"), proc("Connected")])
    assert dev.wait_connected(interval=0.5).is_connected


def test_a_copy_with_no_writes_since_it_parted_rejoins_giving_up_its_side() -> None:
    """A copy left Primary by a cut-off handover: both sides started a new generation
    when the link died, but nothing was written here (empty bitmap)."""
    parted = proc("StandAlone", ro="Primary/Unknown", ds="UpToDate/DUnknown", oos=0)
    demoted = proc("StandAlone", ro="Secondary/Unknown", ds="UpToDate/DUnknown", oos=0)
    dev, r = device([parted, parted, parted, demoted])
    assert dev.rejoin_unwritten() is True
    assert r.calls == [["drbdadm", "secondary", "r0"],
                       ["drbdadm", "connect", "--discard-my-data", "r0"]]


def test_a_copy_written_since_it_parted_is_never_discarded() -> None:
    dev, r = device([proc("StandAlone", ro="Secondary/Unknown", ds="UpToDate/DUnknown",
                          oos=4096)])
    with pytest.raises(DrbdError, match="4096 KiB were written to this copy"):
        dev.rejoin_unwritten()
    assert r.calls == []
    dev, r = device([proc("Connected")])
    assert dev.rejoin_unwritten() is False and r.calls == []


def test_a_copy_in_use_is_not_demoted_to_rejoin() -> None:
    runner = Runner([(11, "Device is held open by someone")])
    dev, r = device([proc("WFConnection", ro="Primary/Unknown", ds="UpToDate/DUnknown")],
                    runner)
    with pytest.raises(DrbdError, match="held open"):
        dev.rejoin_unwritten()
    assert ["drbdadm", "connect", "--discard-my-data", "r0"] not in r.calls


def test_a_paused_guests_unwritten_primary_copy_rejoins_as_the_resyncs_target() -> None:
    """The destination of a move cut off during the memory copy: Primary (the guest is
    there, held paused), split brain with the source, nothing written here since."""
    parted = proc("StandAlone", ro="Primary/Unknown", ds="UpToDate/DUnknown", oos=0)
    dev, r = device([parted, parted])
    assert dev.rejoin_as_target() is True
    assert r.calls == [["drbdadm", "connect", "--after-sb-1pri=violently-as0p",
                        "--rr-conflict=violently", "r0"]]
    # Not demoted (it cannot be: the paused guest holds it), and DRBD must see the
    # same after-sb setting on the source, which reconnects with it.
    waiting = proc("WFConnection", ro="Secondary/Unknown", ds="UpToDate/DUnknown", oos=2048)
    dev, r = device([waiting, waiting])
    dev.reconnect_keeping_writes()
    assert r.calls == [["drbdadm", "disconnect", "r0"],
                       ["drbdadm", "connect", "--after-sb-1pri=violently-as0p",
                        "--rr-conflict=violently", "r0"]]


def test_a_written_primary_copy_never_rejoins_as_a_target() -> None:
    dev, r = device([proc("StandAlone", ro="Primary/Unknown", ds="UpToDate/DUnknown",
                          oos=8)])
    with pytest.raises(DrbdError, match="8 KiB were written to this copy"):
        dev.rejoin_as_target()
    assert r.calls == []
