"""aoai-monitor: watch Azure OpenAI in production — collect, normalize, store, show, price and alert."""

__version__ = "0.1.0"
