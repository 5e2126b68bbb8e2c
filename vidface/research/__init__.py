"""Research: building data sets, training and evaluating vidface's own models.

The runtime (``vidface.pipeline`` and the stage modules) never imports this
package; the command line registers its ``data``, ``train`` and ``eval``
groups from :mod:`vidface.research.cli`.
"""
