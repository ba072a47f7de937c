#!/usr/bin/python3
"""Fits kGeluTable16 and kGeluTable16Lowp (backends/simd/lemevit/backend/simd/math.hpp).

Phi(x) = (1 + erf x) / 2 on 16 intervals centred at x = j/4 (j = 0..15),
one polynomial of degree D (5: kGeluTable16, 2: kGeluTable16Lowp) in
s = x - j/4, s in [-1/8, 1/8] ([0, 1/8] for j = 0).
Each is a least-squares fit on Chebyshev points, reweighted towards minimax
(Lawson), in double against mpmath's erf; the coefficients are rounded to
float one at a time from the constant term up, the others refitted after each.
Then the kernel's float evaluation is emulated over a grid and the GELU error
printed. Prints the C++ table.  Usage: /usr/bin/python3 tools/fit_gelu_table.py [D]
(D = 5 when omitted)
"""
import sys

import mpmath as mp
import numpy as np

mp.mp.dps = 30
DEGREE = int(sys.argv[1]) if len(sys.argv) > 1 else 5
POINTS = 400
NAMES = {5: "kGeluTable16", 2: "kGeluTable16Lowp"}
F32 = np.float32


def phi(x):
    return 0.5 + 0.5 * mp.erf(x)


def fit(j):
    lo, hi = (0.0 if j == 0 else -0.125), 0.125
    s = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (np.arange(POINTS) + 0.5) / POINTS)
    f = np.array([float(phi(mp.mpf(j) / 4 + mp.mpf(v))) for v in s])
    coef = []
    for k in range(DEGREE + 1):
        rest = f - sum(c * s**i for i, c in enumerate(coef))
        a = np.stack([s**i for i in range(k, DEGREE + 1)], 1)
        w = np.ones(POINTS)
        for _ in range(60):
            sol = np.linalg.lstsq(a * np.sqrt(w)[:, None], rest * np.sqrt(w), rcond=None)[0]
            w *= np.abs(a @ sol - rest) + 1e-30
            w /= w.sum()
        coef.append(float(F32(sol[0])))
    return coef


def fma(a, b, c):  # exact product in double, then one rounding to float (a double rounding at worst)
    return F32(np.float64(a) * np.float64(b) + np.float64(c))


def gelu(table, v):  # the kernel's steps in float
    v = F32(v)
    av = abs(v)
    x = min(F32(av * F32(0.70710678118654752)), F32(3.87))
    magic = F32(3145728.0)
    t = F32(x + magic)
    s = F32(x - F32(t - magic))
    j = int(round(float(t - magic) * 4))
    p = F32(table[DEGREE][j])
    for k in range(DEGREE - 1, -1, -1):
        p = fma(p, s, table[k][j])
    return fma(av, p, min(v, F32(0)))


def main():
    table = list(zip(*[fit(j) for j in range(16)]))
    worst = 0.0
    for v in np.concatenate([np.linspace(-10, 10, 100001), np.linspace(-0.01, 0.01, 1001)]).astype(F32):
        want = 0.5 * float(v) * (1 + float(mp.erf(float(v) / mp.sqrt(2))))
        worst = max(worst, abs(float(gelu(table, v)) - want) / max(1.0, abs(float(v))))
    print(f"// GELU max error / max(1, |v|) over [-10, 10]: {worst:.2e}")
    print(f"alignas(64) inline constexpr float {NAMES.get(DEGREE, f'kGeluTable16Degree{DEGREE}')}[{DEGREE + 1}][16] = {{")
    for row in table:
        print("    {" + ", ".join(f"{c:.9e}f" for c in row) + "},")
    print("};")


if __name__ == "__main__":
    main()
