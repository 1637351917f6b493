# setup.cfg holds all metadata; this file only lets old pip/setuptools build the project.
from setuptools import setup

setup()
