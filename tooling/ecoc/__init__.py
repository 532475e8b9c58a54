"""ecoc: prepare, check, render and archive Electronic Certificates of Conformity as IVI 2.0 XML."""

__version__ = "0.1.0"
