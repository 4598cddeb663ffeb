"""Secrets never leave: one redactor for bundles, tickets and log lines.

A diagnostics bundle travels to a helpdesk, gets attached to e-mails and forwarded between
support lines; a gateway's log lines end up in journald and in the bundle's excerpt. A counter
password, an API token or an SSH key that rides along in any of them is a breach at every store
of the chain, so everything that leaves the process passes one ``Redactor``. It works in
layers, as ``sos report`` does, because no single layer catches everything:

1. **by key** (``data``): a value under a key that names a secret (``password``, ``token``,
   ``psk``, ``api_key``, ``Authorization`` ...) becomes ``[REDACTED]`` whatever it looks like.
   ``key`` on its own is not a secret (the ticket's idempotency ``key``), nor is a key that
   only describes a secret (``password_file``, ``token_type``, ``auth_failed``).
2. **by value**: every secret the configuration knows (``Config.secret_values()``), any the
   agent learns at run time (``add``) and the counters' current session tokens (``tokens``),
   wherever it appears, also URL-encoded, JSON-escaped and base64-encoded (inside a longer
   base64 text too), longest first. They are matched as one trie-shaped pattern, so the cost
   of a character does not grow with the number of secrets (a thousand counters' tokens).
3. **by pattern**: PEM private-key blocks (even cut off), ``scheme://user:pass@``,
   ``Authorization:`` headers and bare bearer tokens, ``password=...``/``access_token=...``
   and ``--password ...`` wherever they are, JSON Web Tokens and AWS access key ids.
4. **aliases**, only when the configuration asks: IPv4/IPv6 addresses and configured host
   names become ``ip-1``, ``host-1`` ... consistently within one ``Redactor``, so a support
   engineer can still follow one device through the log, the outputs and the report.

``counts()`` says how often each rule fired, for the bundle's manifest. A ``Redactor`` is
thread-safe (the runner logs from many threads); its repr never shows a secret.
``RedactingFilter`` puts it on a ``logging`` handler; ``scrub`` is the pattern layer alone,
stateless, for code that has no configuration at hand.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"

# --- which keys name a secret ------------------------------------------------------------------

# A key is split into words ("accessToken" -> access, token; "X-Api-Key" -> x, api, key).
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "passphrase",
        "passcode",
        "pin",
        "token",
        "secret",
        "psk",
        "credential",
        "credentials",
        "authorization",
        "auth",
        "cookie",
        "apikey",
        "privatekey",
        "secretkey",
        "accesskey",
        "sessionkey",
        "signature",
    }
)
# "key" alone is an identifier (the ticket's idempotency key, a sort key); after these it is one.
_KEY_QUALIFIERS = frozenset(
    {"api", "private", "secret", "access", "session", "encryption", "signing"}
)
# The last word of a key that only *describes* a secret: where it is, whether it is set, how the
# attempt went. ``password_file`` is a path, ``auth_failed`` a probe error code; both help support.
_DESCRIPTIVE_SUFFIXES = frozenset(
    {
        "file",
        "files",
        "path",
        "dir",
        "url",
        "uri",
        "set",
        "configured",
        "present",
        "ok",
        "failed",
        "failure",
        "failures",
        "error",
        "errors",
        "count",
        "type",
        "method",
        "mode",
        "required",
        "expiry",
        "expires",
        "expired",
        "age",
        "ttl",
        "length",
        "policy",
        "scheme",
        "status",
        "rate",
        "len",
        "at",
        "since",
        "until",
    }
)
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def key_words(key: str) -> list[str]:
    """``"X-Api-Key"`` -> ``["x", "api", "key"]``; ``"accessToken"`` -> ``["access", "token"]``."""
    return [w.lower() for w in _WORD_RE.findall(key)]


def is_secret_key(key: str) -> bool:
    """Does ``key`` name a secret value? ``password``, ``wpa_psk``, ``X-Api-Key``,
    ``accessToken`` do; ``key``, ``ticket_key``, ``monkey``, ``password_file``, ``auth_failed``
    and ``token_type`` do not."""
    words = key_words(key)
    if not words:
        return False
    if words[-1] in _DESCRIPTIVE_SUFFIXES:
        return False
    for i, word in enumerate(words):
        if word in _SECRET_WORDS:
            return True
        if word in ("key", "keys") and i > 0 and words[i - 1] in _KEY_QUALIFIERS:
            return True
    return False


# --- the pattern layer ---------------------------------------------------------------------------

# A PEM private key, or the start of one cut off by an excerpt (up to the end of the text).
_PEM_RE = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY[A-Z0-9 ]*)-----.*?(?:-----END \1-----|\Z)", re.S
)
# The end of a key whose beginning an excerpt cut off; the base64 lines before it go too.
_PEM_END_RE = re.compile(r"-----END ([A-Z0-9 ]*PRIVATE KEY[A-Z0-9 ]*)-----")
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\\\r\n")
# scheme://user:password@host — the user name stays, it helps and is not a secret by itself.
_URL_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)([^\s/]+)@")
_AUTH_HEADER_RE = re.compile(
    r"(?i)\b((?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?:bearer|basic|token|digest|negotiate|ntlm)[ \t]+)?)([^\s\"',;]+)"
)
_BEARER_RE = re.compile(r"(?i)\b(bearer[ \t]+)([A-Za-z0-9._~+/=-]{8,})")
# key=value, key: value, "key": "value", key="value" — the key decides (is_secret_key).
_KV_RE = re.compile(
    r"(?P<key>[A-Za-z_][\w.-]*)(?P<sep>[\"']?[ \t]*[:=][ \t]*)"
    r"(?P<val>\[REDACTED\]|\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s&,;\"'<>)\]}]+)"
)
# --password hunter2 (a command line recorded in a log or an audit trail)
_FLAG_RE = re.compile(r"(?P<key>--?[A-Za-z][\w-]*)(?P<sep>[ \t]+)(?P<val>[^\s\"'-][^\s\"']*)")
# A line that is nothing but a long base64 run of mixed case and digits: the body of a key
# logged line by line, a token on its own line. (A hex digest has no capitals: it stays.)
_KEY_LINE_RE = re.compile(r"(?m)^([ \t]*)([A-Za-z0-9+/]{40,}={0,2})([ \t]*\r?)$")
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_AWS_KEY_RE = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "negotiate", "ntlm"})

# --- the alias layer -----------------------------------------------------------------------------

_IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?:%[\w.]+)?(?![\w:])"
)


MIN_SECRET_LENGTH = 4


class Redactor:
    """Scrubs secrets from text and JSON-like data; see the module docstring for the layers.

    ``secrets``: every secret value to scrub wherever it appears (``Config.secret_values()``).
    ``alias_hosts``: replace IP addresses and the configured ``hosts`` (host names or IPs)
    with consistent aliases. Loopback, unspecified and netmask addresses stay: they identify
    nothing and explain a lot.
    """

    def __init__(
        self, secrets: Iterable[str] = (), *, alias_hosts: bool = False, hosts: Iterable[str] = ()
    ) -> None:
        self._lock = threading.RLock()
        self._secrets: set[str] = set()
        self._tokens: frozenset[str] = frozenset()
        self._value_res: tuple[re.Pattern[str], ...] = ()
        self._alias_hosts = alias_hosts
        self._aliases: dict[str, str] = {}
        self._next = Counter[str]()
        self._counts = Counter[str]()
        self._hosts: set[str] = set()
        self._host_re: re.Pattern[str] | None = None
        self.add(*secrets)
        if alias_hosts:
            self._add_hosts(hosts)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets, alias_hosts={self._alias_hosts})"

    # --- configuration

    def add(self, *secrets: str) -> None:
        """Scrub these values too, from now on: a secret the agent learnt at run time."""
        with self._lock:
            new = _long_enough(secrets)
            if new - self._secrets:
                self._secrets |= new
                self._compile_values()

    def tokens(self, current: Iterable[str]) -> None:
        """Scrub these session tokens (the counters' current ones) in place of the last set.

        A token is a secret only while it works: one the counter refused has been replaced,
        and keeping every token ever issued would grow the pattern with every renewal."""
        with self._lock:
            new = frozenset(_long_enough(current))
            if new != self._tokens:
                self._tokens = new
                self._compile_values()

    def _compile_values(self) -> None:
        forms: set[str] = set()
        for secret in self._secrets | self._tokens:
            forms |= _encoded_forms(secret)
        self._value_res = ()  # the old pieces go before the new ones are compiled
        self._value_res = _value_patterns(forms)

    def _add_hosts(self, hosts: Iterable[str]) -> None:
        names = set()
        for host in hosts:
            host = (host or "").strip().strip("[]")
            if not host:
                continue
            if _as_ip(host) is None:
                names.add(host.lower())
        self._hosts = names
        if names:
            alternation = _trie_pattern(names)
            self._host_re = _compile_uncached(rf"(?i)(?<![\w.-])(?:{alternation})(?![\w-]|\.\w)")

    @property
    def alias_hosts(self) -> bool:
        return self._alias_hosts

    @property
    def value_count(self) -> int:
        """How many secret values are scrubbed by value (never the values)."""
        return len(self._secrets | self._tokens)

    def scoped(self) -> Redactor:
        """The same secrets and aliases, with counts of its own: one bundle's manifest must
        not count the log lines other threads scrubbed meanwhile."""
        twin = copy.copy(self)
        twin._counts = Counter()
        return twin

    # --- scrubbing

    def text(self, s: str) -> str:
        """``s`` with every secret replaced by ``[REDACTED]`` (and hosts aliased if asked)."""
        if not s:
            return s
        with self._lock:
            if self._value_res:
                s = self._by_value(s)
            s = _patterns(s, self._counts)
            if self._alias_hosts:
                s = self._alias(s)
            return s

    def _key(self, k: str) -> str:
        """A mapping's key: a whole secret goes, an address is aliased (when asked), but no
        scrubbing inside it, which would change the data's shape (``updated_at`` must stay
        ``updated_at`` whatever a short secret looks like)."""
        with self._lock:
            if k in self._secrets or k in self._tokens:
                self._count("by_value")
                return REDACTED
            return self._alias(k) if self._alias_hosts else k

    def data(self, obj: Any) -> Any:
        """A copy of JSON-like ``obj`` (dicts, lists, tuples, strings, numbers) with secrets
        scrubbed: values under secret keys wholesale, strings by value, pattern and alias.
        Other objects become their redacted ``str``."""
        if obj is None or isinstance(obj, bool | int | float | Enum | datetime | date | time):
            return obj
        if isinstance(obj, timedelta):
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, bytes | bytearray):
            return self.text(bytes(obj).decode("utf-8", "replace"))
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            for k, v in obj.items():
                key = self._key(k) if isinstance(k, str) else k
                if isinstance(k, str) and is_secret_key(k) and not _empty(v):
                    if isinstance(v, bool):
                        out[key] = v  # "password_ok: true" carries no secret
                    else:
                        self._count("by_key")
                        out[key] = REDACTED
                else:
                    out[key] = self.data(v)
            return out
        if isinstance(obj, tuple):
            return tuple(self.data(v) for v in obj)
        if isinstance(obj, list | set | frozenset):
            return [self.data(v) for v in obj]
        return self.text(str(obj))

    def counts(self) -> dict[str, int]:
        """How many times each rule fired so far, by rule name."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    def alias_counts(self) -> dict[str, int]:
        """How many distinct hosts and addresses were given an alias (never the mapping)."""
        with self._lock:
            return dict(sorted(self._next.items()))

    # --- internals

    def _count(self, rule: str, n: int = 1) -> None:
        with self._lock:
            self._counts[rule] += n

    def _by_value(self, s: str) -> str:
        spans = _value_spans(self._value_res, s)
        if not spans:
            return s
        self._counts["by_value"] += len(spans)
        out, pos = [], 0
        for start, end in spans:
            out += [s[pos:start], REDACTED]
            pos = end
        return "".join(out) + s[pos:]

    def _alias_of(self, kind: str, value: str) -> str:
        alias = self._aliases.get(value)
        if alias is None:
            self._next[kind] += 1
            alias = self._aliases[value] = f"{kind}-{self._next[kind]}"
        return alias

    def _alias(self, s: str) -> str:
        def ip(match: re.Match[str]) -> str:
            text = match.group(0)
            addr = _as_ip(text.split("%", 1)[0])
            if addr is None or _harmless(addr):
                return text
            self._counts["alias_ip"] += 1
            return self._alias_of("ip", addr.compressed)

        s = _IPV6_RE.sub(ip, s)
        s = _IPV4_RE.sub(ip, s)
        if self._host_re is not None:

            def host(match: re.Match[str]) -> str:
                self._counts["alias_host"] += 1
                return self._alias_of("host", match.group(0).lower())

            s = self._host_re.sub(host, s)
        return s


def scrub(text: str) -> str:
    """The pattern layer alone (PEM keys, URL credentials, auth headers, ``password=``...),
    with no configured secrets, no aliases and no counts: for code without a ``Redactor``."""
    return _patterns(text, Counter()) if text else text


def _patterns(s: str, counts: Counter[str]) -> str:
    def sub(pattern: re.Pattern[str], repl: Any, text: str, rule: str) -> str:
        text, n = pattern.subn(repl, text)
        if n:
            counts[rule] += n
        return text

    def keep_marker(prefix_group: int, value_group: int, rule: str) -> Any:
        def repl(m: re.Match[str]) -> str:
            if m.group(value_group) == REDACTED:
                return m.group(0)
            counts[rule] += 1
            return m.group(prefix_group) + REDACTED + m.group(0)[m.end(value_group) - m.start() :]

        return repl

    if "PRIVATE KEY" in s:
        s = sub(_PEM_RE, lambda m: f"-----{m.group(1)} {REDACTED}-----", s, "pem_block")
        s = _orphan_pem_ends(s, counts)
    s, _ = _URL_USERINFO_RE.subn(keep_marker(1, 2, "url_userinfo"), s)
    s, _ = _AUTH_HEADER_RE.subn(keep_marker(1, 2, "http_header"), s)
    s, _ = _BEARER_RE.subn(keep_marker(1, 2, "bearer"), s)
    s = sub(_JWT_RE, lambda m: REDACTED, s, "jwt")

    def key_line(m: re.Match[str]) -> str:
        run = m.group(2)
        if run.islower() or run.isupper() or not any(c.isdigit() for c in run):
            return m.group(0)
        counts["key_material"] += 1
        return m.group(1) + REDACTED + m.group(3)

    s = _KEY_LINE_RE.sub(key_line, s)
    s = sub(_AWS_KEY_RE, lambda m: REDACTED, s, "aws_key_id")

    def kv(m: re.Match[str]) -> str:
        val = m.group("val")
        bare = val.strip("\"'")
        if not bare or not is_secret_key(m.group("key")) or _prose(m):
            # "error: password=hunter2" pairs the harmless key with the whole secret pair:
            # look inside the value for a pair of its own
            inner = _KV_RE.sub(kv, val) if ("=" in val or ":" in val) else val
            return m.group("key") + m.group("sep") + inner
        scheme, _, rest = bare.partition(" ")
        if scheme.lower() in _AUTH_SCHEMES:  # "Bearer [REDACTED]": the header layer did it
            bare = rest or REDACTED
        if bare.startswith(REDACTED):
            return m.group(0)
        counts["key_value"] += 1
        quote_char = val[0] if val[0] in "\"'" else ""
        return f"{m.group('key')}{m.group('sep')}{quote_char}{REDACTED}{quote_char}"

    s = _KV_RE.sub(kv, s)
    s = _FLAG_RE.sub(kv, s)
    return s


_PLAIN_WORD_RE = re.compile(r"[a-z]+(?:-[a-z]+)*")
_NEXT_WORD_RE = re.compile(r"[ \t]+[A-Za-z]")


def _prose(m: re.Match[str]) -> bool:
    """Is this "key: value" a sentence rather than a key and its secret? "the access token:
    expired and refused", "no hardware-fault signature: a Technical Issue": a colon and a
    space, then a plain lower-case word that more words follow on the same line. A secret
    has digits, capitals or symbols, is quoted, follows ``=``, or ends its line."""
    sep = m.group("sep")
    if "=" in sep or not sep.startswith(":") or sep == ":":
        return False
    if not _PLAIN_WORD_RE.fullmatch(m.group("val")):
        return False
    return _NEXT_WORD_RE.match(m.string, m.end()) is not None


def _orphan_pem_ends(s: str, counts: Counter[str]) -> str:
    """Each END line left without its BEGIN, with the key lines just before it."""
    out: list[str] = []
    pos = 0
    for m in _PEM_END_RE.finditer(s):
        start = m.start()
        # Walk back rather than match forward: a regex would rescan long base64 runs (the
        # report's images) from every position.
        while start > pos and s[start - 1] in _KEY_CHARS:
            start -= 1
        out += [s[pos:start], f"-----{m.group(1)} {REDACTED}-----"]
        pos = m.end()
        counts["pem_block"] += 1
    return "".join(out) + s[pos:] if out else s


def _long_enough(values: Iterable[str]) -> set[str]:
    """The values worth scrubbing by value: a secret of a character or three would be "found"
    inside every other word and mangle everything (the by-key and pattern layers take those)."""
    return {
        v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH and v != REDACTED
    }


# Forms per compiled piece of the secret values' pattern. ``re``'s parser takes about 2.6 KB a
# form while it compiles: a thousand counters' tokens (about 5,000 forms) in one pattern took
# 13 MiB of Python objects (20-25 MiB of RSS) at each recompile, the agent's memory peak at
# 1,000 counters (``bench/fleet.py``). In pieces of 512 the same recompile peaked at 3.3 MiB.
VALUE_PIECE = 512


def _value_patterns(forms: Iterable[str], piece: int = VALUE_PIECE) -> tuple[re.Pattern[str], ...]:
    """The secret values' pattern, in pieces of ``piece`` forms (each a trie of its own)."""
    ordered = sorted(set(forms))
    return tuple(
        _compile_uncached(_trie_pattern(ordered[i : i + piece]))
        for i in range(0, len(ordered), piece)
    )


def _value_spans(patterns: Iterable[re.Pattern[str]], s: str) -> list[tuple[int, int]]:
    """Where any piece finds a form in ``s``, overlapping finds merged, in order.

    Each piece is searched from every place a form may start, not only after its last find:
    a piece alone does not know what the others matched, and one pattern would have taken,
    at each place, the longest form of all. So the union covers at least what one pattern
    of every form covers, and nothing that is not a form."""
    found = []
    for rx in patterns:
        m = rx.search(s)
        while m is not None:
            found.append((m.start(), m.end()))
            m = rx.search(s, m.start() + 1)
    if not found:
        return []
    found.sort()
    merged = [found[0]]
    for start, end in found[1:]:
        last_start, last_end = merged[-1]
        if start < last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def _trie_pattern(words: Iterable[str]) -> str:
    """A pattern matching any of ``words``, the longest where several match at one place.

    Laid out as a trie (``ab(?:c|d)`` for abc and abd) rather than a list of alternatives: at
    each position the engine follows the one branch the next character selects, instead of
    trying every word in turn, which with a thousand counters' tokens cost 20 µs a character
    of every text scrubbed. A word that is a prefix of another ends where the longer one's
    rest is optional and greedy (``ab(?:cd)?``). Built from the sorted words, not from a tree
    of nodes: a dict per character of 5,000 forms took 20 MiB at each recompile."""
    ordered = sorted(set(words))
    return _trie_node(ordered, 0, len(ordered), 0) if ordered else ""


def _trie_node(words: list[str], lo: int, hi: int, depth: int) -> str:
    """The pattern of what follows ``depth`` in ``words[lo:hi]`` (sorted, sharing their first
    ``depth`` characters)."""
    ends = len(words[lo]) == depth  # a word that ends here sorts first
    if ends:
        lo += 1
    parts = []
    i = lo
    while i < hi:
        first, j = words[i], i + 1
        while j < hi and words[j][depth] == first[depth]:
            j += 1
        last, k = words[j - 1], depth + 1  # the run they all share: first's and last's
        while k < len(first) and k < len(last) and first[k] == last[k]:
            k += 1
        parts.append(re.escape(first[depth:k]) + _trie_node(words, i, j, k))
        i = j
    if not parts:
        return ""
    body = parts[0] if len(parts) == 1 else f"(?:{'|'.join(parts)})"
    return f"(?:{body})?" if ends else body


def _compile_uncached(pattern: str) -> re.Pattern[str]:
    """Compile one of the redactor's own alternations without ``re``'s module cache.

    They are large (every secret in every encoded form: about 0.5 MB compiled for a thousand
    counters' passwords) and each is used only through the redactor that holds it, while
    ``re.compile`` keeps every pattern it compiles, up to 512 of them. A token added at run
    time recompiles the alternation, so the cache kept each superseded one: 12 MB after a
    thousand counters' first logins, and more with every token renewed.
    """
    compiler = getattr(re, "_compiler", None)  # the engine ``re.compile`` calls (3.11+)
    if compiler is None:  # pragma: no cover - a Python without it: cached, as before
        return re.compile(pattern)
    compiled: re.Pattern[str] = compiler.compile(pattern, 0)
    return compiled


def _encoded_forms(secret: str) -> set[str]:
    """The secret as it may appear in a URL, a JSON text or a base64 blob."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
    forms |= {f.lower() for f in forms if "%" in f}  # %2F and %2f are both seen
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    raw = secret.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(encode(raw).decode())
        forms.add(encode(raw).decode().rstrip("="))
        # Inside a longer base64 text the secret starts at one of three byte offsets; the
        # characters fully determined by its own bytes appear whatever surrounds it.
        for offset in range(3):
            enc = encode(b"\0" * offset + raw).decode().rstrip("=")
            head = (offset * 8 + 5) // 6  # characters touched by the padding bytes
            tail = (len(raw) + offset) * 8 % 6 != 0  # last character shares bits with what follows
            core = enc[head : len(enc) - tail]
            if len(core) >= 8:
                forms.add(core)
    return {f for f in forms if f}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value in ("", REDACTED))


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _harmless(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
        return True
    if isinstance(addr, ipaddress.IPv4Address):
        bits = int(addr)
        inverted = ~bits & 0xFFFFFFFF
        return (inverted & (inverted + 1)) == 0  # a netmask: ones then zeros
    return False


class RedactingFilter(logging.Filter):
    """A ``logging`` filter that scrubs each record's message, exception and stack text.

    Install it on every *handler* (a filter on a logger does not see records propagated from
    its children): ``handler.addFilter(RedactingFilter(redactor))``. It never drops a record.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad %-format: keep what there is, scrubbed
            message = f"{record.msg} {record.args}"
        record.msg = self.redactor.text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True
