from daemon.readiness import Readiness, ReadinessReport


def test_ready_only_when_every_check_is_fine_and_each_says_why_not() -> None:
    state = {"database": True}
    readiness = Readiness()
    readiness.add("database", lambda: None if state["database"] else "unavailable (reconnecting)")
    readiness.add("nats", lambda: None)
    assert readiness.report() == ReadinessReport(True, {"database": "ok", "nats": "ok"})
    state["database"] = False
    assert readiness.report() == ReadinessReport(
        False, {"database": "unavailable (reconnecting)", "nats": "ok"}
    )


def test_a_broken_check_reports_itself_as_not_ready() -> None:
    def broken() -> str | None:
        raise RuntimeError("no state")

    readiness = Readiness()
    readiness.add("brokers", broken)
    report = readiness.report()
    assert not report.ready
    assert report.checks["brokers"].startswith("check failed: RuntimeError")
