// Python bindings of the TinyServe CUDA extension. The Python wrapper in
// tinyserve_core/kernels/_cuda_ops.py normalises inputs and gives these the ops-API
// signatures of reference.py.
#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "TinyServe CUDA kernels";
  m.def("reshape_and_cache", &tinyserve::reshape_and_cache, pybind11::arg("key"), pybind11::arg("value"),
        pybind11::arg("k_cache"), pybind11::arg("v_cache"), pybind11::arg("meta"), pybind11::arg("slot_mapping"),
        pybind11::arg("one_per_page") = false, pybind11::arg("runs") = pybind11::none());
  m.def("paged_decode_attention", &tinyserve::paged_decode_attention, pybind11::arg("query"),
        pybind11::arg("k_cache"), pybind11::arg("v_cache"), pybind11::arg("block_tables"),
        pybind11::arg("seq_lens"), pybind11::arg("scale"), pybind11::arg("page_indices"),
        pybind11::arg("num_splits") = 0, pybind11::arg("kv_scales") = pybind11::none());
  m.def("decode_num_splits", &tinyserve::decode_num_splits);
  m.def("set_tuning", &tinyserve::set_tuning, "the per-device launch policy (kernels/tuning.py)",
        pybind11::arg("split_min_tiles"), pybind11::arg("split_cost"), pybind11::arg("max_splits"),
        pybind11::arg("score_max_ppc"), pybind11::arg("score_min_ctas_per_sm"), pybind11::arg("decode_l2_prefetch"),
        pybind11::arg("sparse_fused_max_batch"), pybind11::arg("decode_merge_max_splits") = 4);
  m.def("sparse_fused_max_batch", &tinyserve::sparse_fused_max_batch);
  m.def("sparse_decode_splits", &tinyserve::sparse_decode_splits);
  m.def("sparse_decode_attention", &tinyserve::sparse_decode_attention, pybind11::arg("query"),
        pybind11::arg("k_cache"), pybind11::arg("v_cache"), pybind11::arg("meta"), pybind11::arg("block_tables"),
        pybind11::arg("seq_lens"), pybind11::arg("scale"), pybind11::arg("k"), pybind11::arg("sink_pages") = 0,
        pybind11::arg("force_last") = false, pybind11::arg("num_splits") = 0);
  m.def("page_scores_ppc", &tinyserve::page_scores_ppc);
  m.def("page_scores", &tinyserve::page_scores, pybind11::arg("query"), pybind11::arg("meta"),
        pybind11::arg("block_tables"), pybind11::arg("seq_lens"), pybind11::arg("scale"),
        pybind11::arg("block_size"), pybind11::arg("pages_per_cta") = 0);
  m.def("select_pages", &tinyserve::select_pages);
  m.def("set_score_mma", &tinyserve::set_score_mma,
        "page_scores on tensor cores for fp16/bf16 (else the FMA kernel); returns the previous setting");
  m.def("set_pdl", &tinyserve::set_pdl, "programmatic dependent launch of the attention-path kernels (sm_90+); returns the previous setting");
  m.def("copy_blocks", &tinyserve::copy_blocks);
  m.def("allocate_blocks", &tinyserve::allocate_blocks);
  m.def("reshape_and_cache_fp8", &tinyserve::reshape_and_cache_fp8, pybind11::arg("key"), pybind11::arg("value"),
        pybind11::arg("k_cache"), pybind11::arg("v_cache"), pybind11::arg("kv_scales"), pybind11::arg("slot_mapping"),
        pybind11::arg("one_per_page") = false, pybind11::arg("runs") = pybind11::none(),
        pybind11::arg("meta") = pybind11::none());
  m.def("page_scores_fp8", &tinyserve::page_scores_fp8, pybind11::arg("query"), pybind11::arg("meta"),
        pybind11::arg("kv_scales"), pybind11::arg("block_tables"), pybind11::arg("seq_lens"), pybind11::arg("scale"),
        pybind11::arg("block_size"));
  m.def("quantize_keys", &tinyserve::quantize_keys, pybind11::arg("k_cache"), pybind11::arg("meta"),
        pybind11::arg("qkeys"), pybind11::arg("slot_mapping"), pybind11::arg("bits"),
        pybind11::arg("qbounds") = std::nullopt);
  m.def("page_scores_copy", &tinyserve::page_scores_copy, pybind11::arg("query"), pybind11::arg("qbounds"),
        pybind11::arg("block_tables"), pybind11::arg("seq_lens"), pybind11::arg("scale"), pybind11::arg("block_size"),
        pybind11::arg("tiles_per_warp") = 0);
  m.def("page_estimates", &tinyserve::page_estimates);
  m.def("estimate_page_lse", &tinyserve::estimate_page_lse);
  m.def("set_lse_mma", &tinyserve::set_lse_mma, "twostage stage 2 on tensor cores (sm_80+) or CUDA cores");
  m.def("set_lse_pages_per_warp", &tinyserve::set_lse_pages_per_warp,
        "the most candidate pages one warp of the stage-2 estimate takes (1..32; default 32)");
  m.def("twostage_candidates", &tinyserve::twostage_candidates);
  m.def("twostage_keep", &tinyserve::twostage_keep);
  m.def("selection_stats_fits", &tinyserve::selection_stats_fits,
        "whether the statistics row kernel's shared memory fits this GPU for (group, max_pages)");
  m.def("selection_stats", &tinyserve::selection_stats);
  m.def("rms_norm", &tinyserve::rms_norm);
  m.def("rotary_embedding", &tinyserve::rotary_embedding);
  m.def("silu_and_mul", &tinyserve::silu_and_mul);
  m.def("skinny_gemm", &tinyserve::skinny_gemm);
}
