// Portability macros so the math headers compile unchanged with g++ and nvcc.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FUSEDNORM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FUSEDNORM_HOST_DEVICE inline
#endif
