"""A deterministic local stand-in for Gemini Live (BidiGenerateContent). A simulator, never a model.

Used by livegate's offline mode and by the test suite::

    async with GeminiLiveSimulator() as sim:   # or: await sim.start(host, port) ... await sim.stop()
        url = sim.url                           # ws://127.0.0.1:PORT (wss:// when given an SSLContext)
        ...
        sim.sessions[0].received                # every client message, as received

Every answer it gives starts with ``[livegate simulator]``.
"""

from .script import PREFIX
from .server import GeminiLiveSimulator, SimSession, backend_for_path

__all__ = ["PREFIX", "GeminiLiveSimulator", "SimSession", "backend_for_path"]
