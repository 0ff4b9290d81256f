{
  "targets": [
    {
      "target_name": "flowstack_nexus",
      "sources": [
        "nexus/native/addon.cc",
        "nexus/native/device.cc",
        "nexus/native/flow_table.cc",
        "nexus/native/io_thread.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2", "-fexceptions"],
      "libraries": ["-lpthread"]
    }
  ]
}
