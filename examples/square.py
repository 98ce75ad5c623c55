"""Square a number, slowly: one second per item, like the original demo.

    pando examples/square.py 1 2 3 4 5 6 7 8 9 10
"""
import time

import pando


@pando.function
def square(x):
    time.sleep(1)
    return x * x
