namespace GpuLlama.Kernels;
