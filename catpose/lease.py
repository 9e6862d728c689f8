"""One writer per store: a run lease (``_catpose_lease.json`` at the store's root).

``catpose run`` and every stage command that writes a store take the lease before any work, renew it
from a background thread while they run and release it at the end. A second run on the same store stops
with :class:`LeaseError` naming the holder (host, pid, since when, until when), or waits for it
(``wait_s``). A lease whose expiry has passed (its holder was killed or lost its machine) is taken over.

The acquisition is atomic where the store offers it:

* S3: a conditional put — ``IfNoneMatch='*'`` creates the object only if it does not exist, and a
  takeover or renewal replaces it only if its ETag is still the one read (``IfMatch``); two runs
  racing for the object get one success and one ``PreconditionFailed`` (moto's server honours both).
* a folder: an exclusive create (``os.open`` with ``O_CREAT | O_EXCL``); renewals, takeovers and the
  release hold an ``fcntl`` lock on ``.catpose_lease.lock`` while they read and replace the file.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from catpose.errors import CatposeError
from catpose.storage import Store, atomic_write_bytes

LEASE = "_catpose_lease.json"


class LeaseError(CatposeError):
    """Another run holds the store's lease."""


# the owners of the leases this process holds now (taken and not yet released or abandoned)
_HELD: set[str] = set()


def _holder_gone(rec: dict) -> bool:
    """Whether a lease record's holder is known to be gone before its expiry: it was taken on this host
    by a process that no longer exists (a run killed with SIGKILL), or by this very process, which holds
    no such lease any more (a run whose release could not reach the store)."""
    if rec.get("host") != socket.gethostname():
        return False
    try:
        pid = int(rec.get("pid"))
    except (TypeError, ValueError):
        return False
    if pid == os.getpid():
        return rec.get("owner") not in _HELD
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _stale(rec: dict | None) -> bool:
    return rec is None or float(rec.get("expires", 0)) < time.time() or _holder_gone(rec)


def _describe(rec: dict) -> str:
    t = lambda x: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(x)))
    return (f"{rec.get('command', 'a catpose run')} on host {rec.get('host')} (pid {rec.get('pid')}, "
            f"lease {str(rec.get('owner', ''))[:8]}) since {t(rec.get('acquired', 0))}, expiring "
            f"{t(rec.get('expires', 0))}")


@dataclass
class Lease:
    """The lease of ``store``: ``ttl_s`` seconds, renewed every ``ttl_s / 3``; ``wait_s`` how long a
    second run waits for it (0: it stops at once)."""

    store: Store
    command: str = "catpose"
    ttl_s: float = 60.0
    wait_s: float = 0.0
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    lost: str | None = None  # set when another run took the lease over meanwhile

    def __post_init__(self) -> None:
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- the record
    def _record(self, acquired: float | None = None) -> dict:
        now = time.time()
        return {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": self.command,
            "acquired": acquired if acquired is not None else now,
            "expires": now + self.ttl_s,
        }

    def _read(self) -> tuple[dict | None, str | None]:
        """(the stored record, its ETag on S3) or (None, None) when there is none."""
        st = self.store
        if st.is_s3:
            bucket, key = self._bucket_key()
            try:
                r = st.fs.call_s3("get_object", Bucket=bucket, Key=key)
                data = _read_body(st, r["Body"])
                return json.loads(data), r["ETag"].strip('"')
            except FileNotFoundError:
                return None, None
            except ValueError:
                return {"owner": "?", "expires": 0}, None
        try:
            with open(st.path(LEASE), "rb") as fh:
                return json.loads(fh.read() or b"{}"), None
        except FileNotFoundError:
            return None, None
        except ValueError:  # a torn record (its writer died mid-write): stale
            return {"owner": "?", "expires": 0}, None

    def _bucket_key(self) -> tuple[str, str]:
        bucket, _, key = self.store.path(LEASE).partition("/")
        return bucket, key

    def _put_s3(self, rec: dict, if_match: str | None) -> bool:
        bucket, key = self._bucket_key()
        cond = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            r = self.store.fs.call_s3(
                "put_object", Bucket=bucket, Key=key, Body=json.dumps(rec).encode(), **cond
            )
        except FileExistsError:  # s3fs's translation of 412 PreconditionFailed
            return False
        except OSError as e:
            msg = str(e).lower().replace("-", "")
            if "precondition" in msg or "412" in msg or "conditionalrequestconflict" in msg:
                return False
            raise
        self._etag = r["ETag"].strip('"')
        return True

    # ---------------------------------------------------------------- acquire / renew / release
    def _try(self) -> dict | None:
        """Takes the lease if free or stale; returns None on success, else the holder's record."""
        if self.store.is_s3:
            held, _ = self._read()  # (also opens the connection: the record's times are taken after it)
            rec = self._record()
            if held is None and self._put_s3(rec, None):
                return None
            held, etag = self._read()
            if held is None:
                return self._try()
            if _stale(held) and etag and self._put_s3(rec, etag):
                print(f"lease: took over the stale lease of {_describe(held)}", flush=True)
                return None
            return held
        path = self.store.path(LEASE)
        self.store.makedirs()
        with _Flock(_lock_path(self.store)):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held, _ = self._read()
                if not _stale(held):
                    return held
                print(f"lease: took over the stale lease of {_describe(held or {})}", flush=True)
                atomic_write_bytes(path, json.dumps(self._record()).encode())
                return None
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(self._record()).encode())
            return None

    def acquire(self) -> Lease:
        self.store.check()  # a file in the way, no bucket, no write access: the store's own error, first
        deadline = time.time() + self.wait_s
        while True:
            held = self._try()
            if held is None:
                break
            if time.time() >= deadline:
                raise LeaseError(f"{self.store.url(LEASE)}: the store is in use by {_describe(held)}; wait "
                                 "for "
                                 "it to finish, use another --out, or remove that file if its run is gone "
                                 "(a lease expires by itself when its run stops renewing it)")
            time.sleep(min(2.0, max(0.1, deadline - time.time())))
        self._acquired = time.time()
        _HELD.add(self.owner)
        self._thread = threading.Thread(target=self._renew_loop, name="catpose-lease", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> bool:
        """Extends the lease; False (and :attr:`lost` set) when another run holds it now."""
        if self.store.is_s3:
            held, etag = self._read()
            if (
                held is None
                or held.get("owner") != self.owner
                or not self._put_s3(self._record(self._acquired), etag)
            ):
                self.lost = _describe(held or {})
                return False
            return True
        path = self.store.path(LEASE)
        with _Flock(_lock_path(self.store)):
            held, _ = self._read()
            if held is None or held.get("owner") != self.owner:
                self.lost = _describe(held or {})
                return False
            atomic_write_bytes(path, json.dumps(self._record(self._acquired)).encode())
            return True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.renew():
                    print(f"lease: {self.store.url(LEASE)} was taken over by {self.lost}", flush=True)
                    return
            except Exception as e:  # a store outage: said; the lease may expire
                print(f"lease: could not renew {self.store.url(LEASE)}: {type(e).__name__}: {e}", flush=True)

    def release(self) -> None:
        """Stops renewing and removes the lease if it is still this run's. Raises :class:`LeaseError`
        when another run took it over meanwhile (its outputs and this run's may be mixed)."""
        self._stop.set()
        _HELD.discard(self.owner)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.lost is None:
            if self.store.is_s3:
                held, _ = self._read()
                if held is not None and held.get("owner") == self.owner:
                    self.store.remove(LEASE)
                elif held is not None:
                    self.lost = _describe(held)
            else:
                with _Flock(_lock_path(self.store)):
                    held, _ = self._read()
                    if held is not None and held.get("owner") == self.owner:
                        os.unlink(self.store.path(LEASE))
                    elif held is not None:
                        self.lost = _describe(held)
        if self.lost is not None:
            raise LeaseError(f"{self.store.url(LEASE)}: this run's lease was taken over by {self.lost} while "
                             "it "
                             "ran (it stopped renewing for longer than the lease's time); its outputs may be "
                             "mixed with that run's: rerun it")

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()
        except Exception as e:
            if exc_type is None:
                raise
            # the run failed already (e.g. its store went away): that error is the one to see; the lease
            # left behind is taken over by the next run on this host at once, elsewhere after its expiry
            print(f"lease: could not release {self.store.url(LEASE)}: {type(e).__name__}: {e}", flush=True)


def _read_body(store: Store, body) -> bytes:
    """The bytes of a get_object Body (an aiobotocore stream read on s3fs's event loop)."""
    from fsspec.asyn import sync

    async def read():
        async with body as b:
            return await b.read()

    return sync(store.fs.loop, read)


def _lock_path(store: Store) -> str:
    return store.path(".catpose_lease.lock")


class _Flock:
    """An exclusive ``fcntl`` lock on a side file (a folder store's lease updates, one at a time)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def store_lease(uri: str, endpoint_url: str | None, command: str) -> Lease:
    """The lease of the store at ``uri``, its timing from ``$CATPOSE_LEASE_TTL_S`` (default 60) and
    ``$CATPOSE_LEASE_WAIT_S`` (default 0: a second run stops at once)."""
    return Lease(Store(str(uri), endpoint_url), command, float(os.environ.get("CATPOSE_LEASE_TTL_S", "60")),
                 float(os.environ.get("CATPOSE_LEASE_WAIT_S", "0")))
