"""dilt: Disentangled Lottery Tickets.

Find masks with IMP (LTH, COLT, DiLT), derive core / specialist / union tickets, retrain and
evaluate them, and measure functional disentanglement with Gromov-Wasserstein distances.
"""

__version__ = "0.1.0"
