"""A SimCLR whose rank 1 stops answering at its third forward: the stand-in for a hung data loader or
a dead node in test_hung_rank.py, which names it in a recipe through SSLP_ALLOW_COMPONENTS. Not a
test module itself."""

import signal
import time

from ssl_platform import distributed
from ssl_platform.methods.simclr import SimCLR

HANG_S = 30.0  # longer than the test's collective timeout plus the time rank 0 waits for answers


class HangingSimCLR(SimCLR):
    """SimCLR, except that rank 1 sleeps `HANG_S` seconds in its third forward.

    While it sleeps, torchrun's SIGTERM (sent once rank 0 has failed) ends it at once: the engine's
    handler, which lets a step finish first (and so the whole sleep), is put back to the default.
    """

    calls = 0

    def forward(self, batch):
        self.calls += 1
        if distributed.rank() == 1 and self.calls == 3:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(HANG_S)
        return super().forward(batch)
