"""The package's version, in a module that imports nothing: whatever reports it (the plugin's info
series, doctor, the tracer's name) can import it without importing the package's other parts."""

__version__ = "0.1.0"
