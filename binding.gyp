{
  "targets": [
    {
      "target_name": "sockleak",
      "sources": ["native/addon.cc", "native/tracer-wrap.cc", "native/scanner-wrap.cc", "native/reaper-wrap.cc", "native/tracer.cc", "native/tracer-load.cc", "native/ring-poller.cc", "native/tracer-maps.cc", "native/scanner.cc", "native/scan-buffer.cc", "native/reaper.cc", "native/sock-diag.cc", "native/diag-scan.cc", "native/refusal.cc", "native/leak-walk.cc", "native/probe.cc", "native/netns.cc", "native/features.cc", "native/libbpf-log.cc", "native/scan-skel.c"],
      "include_dirs": [
        "<!@(node -p \"require('node-addon-api').include\")",
        "bpf",
        "bpf/.output"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags": ["-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden", "-fno-exceptions"],
      "libraries": ["-lbpf"]
    }
  ]
}
