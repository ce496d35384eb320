/* SPDX-License-Identifier: MIT */
// sized_delete.cc - the misuse table's C++ case: an object deleted through a base class
// without a virtual destructor, so the sized operator delete gets the base's size (16)
// for an 80-byte block.
struct Base {
  char x[16];
};
struct Derived : Base {
  char y[64];
};

int main() {
  Base* b = new Derived;
  delete b;
  return 0;
}
