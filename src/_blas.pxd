# Row-major GEMM on top of SciPy's Fortran (column-major) BLAS.
#
# A row-major m x n matrix is the column-major n x m matrix, so C = op(A) op(B)
# in row-major is C^T = op(B)^T op(A)^T in column-major: swap the operands.

from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """C (m x n) = alpha * op(A) @ op(B) + beta * C, all row-major."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int i, j, inc_a = lda if trans_a else 1, one = 1
    if m == 0 or n == 0:
        return
    if k == 0:
        # BLAS would reject the zero leading dimensions of empty operands.
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    if m == 1:
        # One row (batch 1): a matrix-vector product, which BLAS does without
        # packing the matrix first. c = op(B)^T a, op(B) read as column-major.
        if floating is float:
            sgemv(&tb, &k if trans_b else &n, &n if trans_b else &k, &alpha, <float*>b, &ldb,
                  <float*>a, &inc_a, &beta, c, &one)
        else:
            dgemv(&tb, &k if trans_b else &n, &n if trans_b else &k, &alpha, <double*>b, &ldb,
                  <double*>a, &inc_a, &beta, c, &one)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
