"""The session report: one self-contained HTML page (``report.html``) plus its PNGs.

``collect`` reads whatever steps exist in a results folder, ``plots`` draws the figures (matplotlib, Agg),
``render`` writes the page (images embedded as data URIs, so the single file can be mailed or archived).
"""

from tiltflow.qc.report.render import write_report

__all__ = ["write_report"]
