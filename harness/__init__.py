"""For tests and demos only: real cases driven through the real pipeline (driver.py).

Nothing in the service imports this package.
"""
