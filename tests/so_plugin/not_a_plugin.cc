// A shared object without popgate's entry points, for the tests of the refusal.
extern "C" __attribute__((visibility("default"))) int not_a_popgate_plugin() { return 42; }
