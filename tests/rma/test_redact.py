"""The redactor's layers: by key, by value, by pattern, aliases; and its log filter."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnostics.model import Finding, Status
from rma.redact import (
    REDACTED,
    RedactingFilter,
    Redactor,
    _trie_pattern,
    _value_patterns,
    _value_spans,
    is_secret_key,
    scrub,
)
from rma.tickets import CounterRef, ProblemContext, Role, Ticket, compose, idempotency_key

SECRET = "Zq7-counter-Pass!42"
OTHER = "smtp-Secret%2024/x"

ORDINARY = (
    "2025-06-26T09:30:00+01:00 counter FFC0002 'Main door' at site LDN01 (Oxford Street): "
    "in 412, out 398, expected 612.4, zero run 09:30-12:00, ticket ffc-3f9a1c2b7d4e5a60, "
    "check counter.counts.stopped, error auth_failed: credentials refused, firmware 4.2, "
    "MAC b8:27:eb:12:34:56, time 12:30:45, key=ffc-3f9a1c2b7d4e5a60, password_file=/etc/ffc/pw"
)


# --- by key ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "passwd",
        "pwd",
        "token",
        "access_token",
        "accessToken",
        "secret",
        "client_secret",
        "psk",
        "wpa_psk",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "private_key",
        "Authorization",
        "Proxy-Authorization",
        "cookie",
        "Set-Cookie",
        "credentials",
        "smtp.password",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "key",
        "ticket_key",
        "idempotency_key",
        "monkey",
        "keys",
        "host_key",
        "check_id",
        "password_file",
        "key_file",
        "token_type",
        "auth_failed",
        "author",
        "serial",
        "passed",
        "bypass",
        "expected",
        "zero_since",
    ],
)
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_by_key_replaces_values_wherever_they_nest() -> None:
    r = Redactor()
    data: dict[str, Any] = {
        "key": "ffc-3f9a1c2b7d4e5a60",
        "check_id": "counter.counts.stopped",
        "evidence": {
            "password": "hunter2",
            "headers": [{"Authorization": "Basic dXNlcjpwYXNz", "Accept": "application/json"}],
            "credentials": {"user": "admin", "pass": "x"},
            "api_key": 123456,
            "token": None,
            "password_ok": True,
            "monkey": 3,
            "expected": 612.4,
        },
    }
    out = r.data(data)
    assert out["key"] == "ffc-3f9a1c2b7d4e5a60"
    assert out["check_id"] == "counter.counts.stopped"
    ev = out["evidence"]
    assert ev["password"] == REDACTED
    assert ev["headers"] == [{"Authorization": REDACTED, "Accept": "application/json"}]
    assert ev["credentials"] == REDACTED
    assert ev["api_key"] == REDACTED
    assert ev["token"] is None  # nothing to hide
    assert ev["password_ok"] is True  # a flag carries no secret
    assert ev["monkey"] == 3 and ev["expected"] == 612.4
    assert r.counts()["by_key"] == 4
    assert data["evidence"]["password"] == "hunter2"  # the input is not changed


# --- by value --------------------------------------------------------------------------------


def test_by_value_in_every_encoding() -> None:
    r = Redactor([SECRET, OTHER])
    blob = base64.b64encode(b"user=admin;pw=" + SECRET.encode() + b";end").decode()
    texts = [
        f"login with {SECRET} failed",
        f"GET /x?p={quote(SECRET, safe='')}",
        f"GET /x?p={quote(SECRET, safe='').lower()}",
        json.dumps({"note": f'said "{OTHER}"'}),
        f"header {base64.b64encode(SECRET.encode()).decode()}",
        f"urlsafe {base64.urlsafe_b64encode(OTHER.encode()).decode().rstrip('=')}",
        f"inside a base64 blob {blob}",
    ]
    for text in texts:
        out = r.text(text)
        assert REDACTED in out, text
        for form in (SECRET, OTHER, quote(SECRET, safe=""), base64.b64encode(SECRET.encode())):
            assert (form if isinstance(form, str) else form.decode()) not in out


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_by_value_inside_base64_at_any_alignment(offset: int) -> None:
    r = Redactor([SECRET])
    raw = b"x" * offset + SECRET.encode() + b"tail-bytes"
    encoded = base64.b64encode(raw).decode()
    out = r.text(encoded)
    assert REDACTED in out
    # All but the two characters that share bits with the neighbours are gone.
    left = len(out) - len(REDACTED)
    assert left <= len(encoded) - (len(SECRET) * 4 // 3 - 2)


def test_longest_secret_first() -> None:
    r = Redactor(["abcd1234", "abcd1234-extended"])
    assert r.text("v=abcd1234-extended;") == f"v={REDACTED};"


def test_secrets_added_at_run_time() -> None:
    r = Redactor([SECRET])
    token = "tok-9a8b7c6d5e4f"
    assert r.text(f"token is {token}") == f"token is {token}"
    r.add(token)
    assert r.text(f"token is {token}") == f"token is {REDACTED}"


# --- by pattern ------------------------------------------------------------------------------


PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n"
    "7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFc\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"key:\n{PEM}\nnext line", ["key:", "next line", "RSA PRIVATE KEY"], ["MIIEowIB", "7onL"]),
        ("cut:\n" + PEM[:120], ["cut:"], ["MIIEowIB"]),
        (
            "[... 812 earlier bytes left out ...]\nezV6ffAt0gunVTLw\n" + PEM[-90:] + "\nafter",
            ["earlier bytes left out", "after"],
            ["7onL", "ezV6ff"],
        ),
        (
            "GET http://admin:hunter22@10.20.0.12/cgi-bin/apiCount.cgi",
            ["http://admin:", "@10.20.0.12/cgi-bin"],
            ["hunter22"],
        ),
        ("mqtt://u:p@ss:w0rd@broker:1883", ["mqtt://u:", "@broker"], ["w0rd"]),
        ("Authorization: Bearer abcdefghijklmnop1234", ["Authorization: Bearer"], ["abcdefgh"]),
        ('{"Authorization": "Basic dXNlcjpwYXNz"}', ['"Basic '], ["dXNlcjpwYXNz"]),
        ("authorization: token ghp_abc123def456", ["token"], ["ghp_abc123"]),
        ("sent bearer AbCdEfGh12345678.xyz", ["bearer"], ["AbCdEfGh"]),
        (
            "/cgi-bin/access_token.cgi?username=admin&password=s3cr3t&x=1",
            ["username=admin", "&x=1"],
            ["s3cr3t"],
        ),
        ("/cgi-bin/apiCount.cgi?access_token=9f8e7d6c5b&data_type=json", ["data_type"], ["9f8e"]),
        ('wpa_psk="wifi pass 77" ssid=Store', ["ssid=Store"], ["wifi pass"]),
        ("password: hunter2\nuser: admin", ["user: admin"], ["hunter2"]),
        ("ffc-agent remote shell --password hunter2 --host door", ["--host door"], ["hunter2"]),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
            ["jwt"],
            ["eyJhbGci"],
        ),
        ("aws AKIAIOSFODNN7EXAMPLE ok", ["aws", "ok"], ["AKIAIOSFODNN7EXAMPLE"]),
    ],
)
def test_patterns(text: str, kept: list[str], gone: list[str]) -> None:
    for out in (Redactor().text(text), scrub(text)):
        assert REDACTED in out
        for k in kept:
            assert k in out, (k, out)
        for g in gone:
            assert g not in out, (g, out)


def test_scrub_knows_no_configured_secret() -> None:
    assert scrub(f"plain {SECRET}") == f"plain {SECRET}"
    assert Redactor([SECRET]).text(f"plain {SECRET}") == f"plain {REDACTED}"


# --- ordinary values are kept ------------------------------------------------------------------


def test_ordinary_text_is_kept() -> None:
    r = Redactor([SECRET, OTHER])
    assert r.text(ORDINARY) == ORDINARY
    assert r.counts() == {}


def test_redaction_is_idempotent() -> None:
    r = Redactor([SECRET], alias_hosts=True, hosts=["door1.store.local"])
    text = (
        f"{PEM}\nhttp://admin:{SECRET}@10.0.0.7/ Authorization: Bearer abcdefghij123 "
        "password=abc door1.store.local fe80::1"
    )
    once = r.text(text)
    assert r.text(once) == once


# --- aliases ---------------------------------------------------------------------------------


def test_aliases_are_consistent() -> None:
    r = Redactor(alias_hosts=True, hosts=["door1.store.local", "gw.store.local", "10.20.0.99"])
    a = r.text("probe 10.20.0.12 and 10.20.0.13 via DOOR1.store.local")
    b = r.text("again 10.20.0.13, then 10.20.0.12; door1.store.local and door10.store.local")
    assert a == "probe ip-1 and ip-2 via host-1"
    assert b == "again ip-2, then ip-1; host-1 and door10.store.local"
    data = r.data({"10.20.0.12": {"peer": "10.20.0.13", "gw": "gw.store.local"}})
    assert data == {"ip-1": {"peer": "ip-2", "gw": "host-2"}}
    assert r.alias_counts() == {"host": 2, "ip": 2}


def test_aliases_cover_ipv6_and_leave_harmless_addresses() -> None:
    r = Redactor(alias_hosts=True)
    out = r.text(
        "v6 2001:db8::5 fe80::1%eth0 2001:DB8:0:0:0:0:0:5 lo 127.0.0.1 ::1 any 0.0.0.0 "
        "mask 255.255.255.0 at 12:30:45 MAC b8:27:eb:12:34:56 v 10.0.0.1"
    )
    assert out == (
        "v6 ip-1 ip-2 ip-1 lo 127.0.0.1 ::1 any 0.0.0.0 mask 255.255.255.0 at 12:30:45 "
        "MAC b8:27:eb:12:34:56 v ip-3"
    )


def test_no_aliases_unless_asked() -> None:
    r = Redactor([SECRET], hosts=["door1.store.local"])
    text = "probe 10.20.0.12 via door1.store.local"
    assert r.text(text) == text


def test_counts_and_scoped_counts() -> None:
    r = Redactor([SECRET], alias_hosts=True)
    r.text(f"{SECRET} 10.0.0.1 password=x")
    scoped = r.scoped()
    assert scoped.counts() == {}
    assert scoped.text("10.0.0.1 and 10.0.0.2") == "ip-1 and ip-2"  # the same aliases
    assert scoped.counts() == {"alias_ip": 2}
    assert r.counts() == {"alias_ip": 1, "by_value": 1, "key_value": 1}


def test_repr_shows_no_secret() -> None:
    r = Redactor([SECRET, OTHER])
    assert SECRET not in repr(r) and OTHER not in repr(r)
    assert "2 secrets" in repr(r)


# --- log lines -------------------------------------------------------------------------------


def test_logging_filter_scrubs_messages_args_and_tracebacks() -> None:
    r = Redactor([SECRET])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter(r))
    log = logging.getLogger("tests.rma.redact.child")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.info("token request with password %s", SECRET)
        log.debug("GET http://admin:%s@10.0.0.7/x %s", "hunter22", {"access_token": "abcdef99"})
        try:
            raise RuntimeError(f"cannot log in with {SECRET}")
        except RuntimeError:
            log.exception("probe failed")
        log.warning("bad format %s %s", "one")  # a broken call still leaves no secret
        log.info("counter %s counted %d", "FFC0002", 412)
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert SECRET not in out and "hunter22" not in out and "abcdef99" not in out
    assert out.count(REDACTED) >= 4
    assert "RuntimeError" in out and "probe failed" in out
    assert "counter FFC0002 counted 412" in out


# --- tickets ---------------------------------------------------------------------------------


def test_a_ticket_passed_through_the_redactor_carries_no_secret() -> None:
    """How the agent files: compose, then ``redactor.data(ticket.to_json())`` before the
    outbox. compose alone scrubs URL credentials but knows no configured secret."""
    now = datetime(2025, 6, 26, 14, 30, tzinfo=UTC)
    finding = Finding(
        check_id="counter.offline",
        status=Status.FAIL,
        code="auth_failed",
        summary=f"the counter refused the password {SECRET}",
        at=now,
        site="LDN01",
        subject="FFC0002",
        evidence={
            "error": f"GET http://admin:{OTHER}@10.20.0.12/cgi-bin/access_token.cgi failed",
            "consecutive_failures": 3,
            "password": SECRET,
        },
    )
    ctx = ProblemContext(
        key=idempotency_key("counter.offline", "FFC0002", now),
        site_code="LDN01",
        site_name="Oxford Street",
        timezone="Europe/London",
        counters=(CounterRef("FFC0002", "Main door", "10.20.0.12"),),
        findings=(finding,),
        started_at=now,
        requester="it@store.example",
        cc=(),
        role=Role.CUSTOMER,
        now=now,
    )
    r = Redactor([SECRET, OTHER])
    ticket = Ticket.from_json(r.data(compose(ctx).to_json()))
    text = json.dumps(ticket.to_json())
    assert SECRET not in text and OTHER not in text
    assert quote(OTHER, safe="") not in text
    assert ticket.key == ctx.key and ticket.counters == ["FFC0002"] and ticket.site == "LDN01"
    assert "FFC0002" in ticket.comment.which_device


def test_a_secret_pair_inside_a_harmless_pair_is_found():
    from rma.redact import scrub

    assert scrub("last error: password=hunter2") == "last error: password=[REDACTED]"
    assert "abc123XYZ" not in scrub("probe failed: token=abc123XYZ")
    assert scrub("at: 12:30 state: ok") == "at: 12:30 state: ok"


def test_short_secrets_and_keys_keep_the_data_whole() -> None:
    r = Redactor(["t", "ab", "hunter2"])
    data = r.data({"updated_at": "at tea time", "note": "pw hunter2", "hunter2": 1})
    # a one- or two-character secret would be found inside every word: not scrubbed by value
    assert data["updated_at"] == "at tea time"
    assert data["note"] == "pw [REDACTED]"
    assert set(data) == {"updated_at", "note", "[REDACTED]"}  # a key that IS a secret goes


# --- prose is not a key and its secret (issue 14: "access token: [REDACTED] garbage") --------


@pytest.mark.parametrize(
    "text",
    [
        "login failed: the access token: expired and refused by the counter",
        "no hardware-fault signature: a Technical Issue, signatures none",
        "the token: is no longer accepted",
        "password: not set for this counter",
    ],
)
def test_ordinary_words_after_a_secret_word_are_kept(text: str) -> None:
    for out in (Redactor().text(text), scrub(text)):
        assert out == text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("token: VALUE and more", "VALUE"),
        ("password: hunter2 then words", "hunter2"),
        ("password: letmein\nuser: admin", "letmein"),
        ("password=letmein and more", "letmein"),
        ("access token: 9f8e7d6c5b garbage", "9f8e7d6c5b"),
        ('"token": "plain words here"', "plain words"),
        ("token: s3cret-Value", "s3cret-Value"),
    ],
)
def test_a_secret_after_a_secret_word_still_goes(text: str, secret: str) -> None:
    for out in (Redactor().text(text), scrub(text)):
        assert secret not in out and REDACTED in out, out


def test_a_superseded_secret_pattern_is_not_kept_anywhere():
    # a token renewed at run time recompiles the pattern of every secret; the one it
    # replaces must go (re.compile's module cache kept each, 0.5 MB apiece at 1,000 counters)
    import gc
    import weakref

    redactor = Redactor(
        [f"counter-password-{i:04d}" for i in range(50)], alias_hosts=True, hosts=["gw.example"]
    )
    redactor.tokens(["session-token-0001"])
    old = weakref.ref(redactor._value_res[0])
    redactor.tokens(["session-token-0002"])  # the counter refused the first: renewed
    gc.collect()
    assert old() is None
    out = redactor.text("pw counter-password-0007 then session-token-0002 at gw.example")
    assert "counter-password-0007" not in out and "session-token-0002" not in out
    assert "gw.example" not in out
    # the refused token is no secret any more, and the pattern does not keep growing
    assert "session-token-0001" in redactor.text("old session-token-0001")
    assert redactor.value_count == 51


def test_the_counters_tokens_are_scrubbed_in_every_form_and_the_configured_secrets_stay():
    tokens = [f"{i:040x}" for i in range(1, 1001)]
    redactor = Redactor(["hunter2-password"])
    redactor.tokens(tokens)
    text = (
        f"GET /api?token={tokens[7]} json {json.dumps({'t': tokens[999]})} "
        f"b64 {base64.b64encode(tokens[500].encode()).decode()} pw hunter2-password"
    )
    out = redactor.text(text)
    for secret in (tokens[7], tokens[999], "hunter2-password"):
        assert secret not in out
    assert base64.b64encode(tokens[500].encode()).decode() not in out
    assert out.count(REDACTED) == 4


@settings(max_examples=300, deadline=None)
@given(
    words=st.sets(st.text(alphabet="ab%/+=", min_size=1, max_size=6), min_size=1, max_size=12),
    text=st.text(alphabet="ab%/+=xy", max_size=60),
)
def test_the_trie_pattern_matches_as_the_longest_first_alternation_did(words, text):
    plain = re.compile("|".join(map(re.escape, sorted(words, key=lambda s: (-len(s), s)))))
    assert re.compile(_trie_pattern(words)).sub("#", text) == plain.sub("#", text)


@settings(max_examples=300, deadline=None)
@given(
    words=st.sets(st.text(alphabet="ab%/+=", min_size=1, max_size=6), min_size=1, max_size=12),
    text=st.text(alphabet="ab%/+=xy", max_size=60),
    piece=st.integers(min_value=1, max_value=4),
)
def test_the_pattern_in_pieces_scrubs_all_one_pattern_would_and_only_forms(words, text, piece):
    def mask(spans):
        out = [False] * len(text)
        for a, b in spans:
            out[a:b] = [True] * (b - a)
        return out

    one = re.compile(_trie_pattern(words))
    whole = mask((m.start(), m.end()) for m in one.finditer(text))
    pieces = mask(_value_spans(_value_patterns(words, piece), text))
    anywhere = mask(
        (i, i + len(w)) for w in words for i in range(len(text)) if text.startswith(w, i)
    )
    assert all(p or not w for w, p in zip(whole, pieces, strict=True))  # at least as much
    assert all(a or not p for p, a in zip(pieces, anywhere, strict=True))  # and only forms
