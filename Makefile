# SPDX-License-Identifier: MIT
# Makefile - hakmem without Bazel (GNU make, gcc or clang): the three public variants
# as shared and static libraries, and `make install` with pkg-config files and a CMake
# package. docs/INSTALL.md is the user's guide.
#
#   make                       build everything into out/make/
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make uninstall PREFIX=/usr/local [DESTDIR=...]
#   make clean
#   make check-install         ci/install_consumers.sh: install into a temporary prefix,
#                              build and run the example consumers, check the symbols
#
# hakmem/variants.bzl is the source of truth for the compile flags (HAK_COPTS), the
# core sources (HAK_CORE_SRCS) and the public variants with their defines
# (HAK_VARIANTS): mk/variants.awk reads them from it into out/make/variants.mk, so
# editing variants.bzl changes this build too. What the Bazel macro
# _hak_override_and_shared adds for the malloc-replacing libraries (hak_api.c and
# hak_new.c with HAK_OVERRIDE=1 and -fexceptions; -z nodelete and --as-needed for the
# shared library) is repeated below; ci/make_config_check.py evaluates variants.bzl as
# Bazel does and fails when this Makefile disagrees with it.
#
# Per variant <v> (suffix "", _stats, _hardened):
#   libhakmem<v>.so.X.Y.Z  SONAME libhakmem<v>.so.X (X: major of VERSION), exporting
#                          exactly the symbols of hakmem/hakmem.map, NEEDED libc only
#   libhakmem<v>.a         ONE relocatable object (ld -r of every object of the variant,
#                          then objcopy --localize-hidden: internal symbols are local,
#                          the globals are those of hakmem.map). Any reference to one
#                          of its symbols (malloc, or -Wl,-u,malloc from hakmem.pc)
#                          links all of it: the allocator cannot be half linked.

VERSION := $(shell cat VERSION)
MAJOR := $(word 1,$(subst ., ,$(VERSION)))

CC ?= cc
LD ?= ld
AR ?= ar
OBJCOPY ?= objcopy
INSTALL ?= install
# Extra flags of the user's (distributions pass their hardening and debug flags here).
CFLAGS ?=
CPPFLAGS ?=
LDFLAGS ?=

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR := $(LIBDIR)/cmake/hakmem

OUT := out/make
MAP := hakmem/hakmem.map

# HAK_COPTS, HAK_CORE_SRCS, HAK_VARIANTS, HAK_SUFFIX_<v>, HAK_DEFINES_<v>.
$(OUT)/variants.mk: hakmem/variants.bzl mk/variants.awk
	@mkdir -p $(@D)
	awk -f mk/variants.awk hakmem/variants.bzl > $@.tmp
	mv $@.tmp $@
include $(OUT)/variants.mk

# The malloc-replacing part (Bazel: _hak_override_and_shared in variants.bzl).
HAK_OVERRIDE_SRCS := hak_api.c hak_new.c
HAK_OVERRIDE_COPTS := -fexceptions
HAK_OVERRIDE_DEFINES := HAK_OVERRIDE=1
HAK_SHARED_LINKOPTS := -Wl,-z,nodelete -Wl,--as-needed

# Outside Bazel: position-independent code for both kinds of library, threads.
HAK_MAKE_COPTS := -fPIC -pthread
HAK_INCLUDES := -Ihakmem/include -Ihakmem

lib_of = libhakmem$(HAK_SUFFIX_$(1))
SHARED_LIBS := $(foreach v,$(HAK_VARIANTS),$(OUT)/lib/$(call lib_of,$(v)).so.$(VERSION))
SHARED_LINKS := $(foreach v,$(HAK_VARIANTS),$(OUT)/lib/$(call lib_of,$(v)).so.$(MAJOR) $(OUT)/lib/$(call lib_of,$(v)).so)
STATIC_LIBS := $(foreach v,$(HAK_VARIANTS),$(OUT)/lib/$(call lib_of,$(v)).a)

.PHONY: all install uninstall clean check-install print-config
.DEFAULT_GOAL := all
all: $(SHARED_LIBS) $(SHARED_LINKS) $(STATIC_LIBS)

# One variant's objects and libraries; $(1) is the variant's name.
define variant_rules
$(1)_OBJDIR := $(OUT)/obj/$(1)
$(1)_CORE_OBJS := $$(patsubst %.c,$(OUT)/obj/$(1)/%.o,$$(HAK_CORE_SRCS))
$(1)_OVERRIDE_OBJS := $$(patsubst %.c,$(OUT)/obj/$(1)/%.o,$$(HAK_OVERRIDE_SRCS))
$(1)_OBJS := $$($(1)_CORE_OBJS) $$($(1)_OVERRIDE_OBJS)
$(1)_LIB := $(OUT)/lib/$(call lib_of,$(1))

$$($(1)_CORE_OBJS): $(OUT)/obj/$(1)/%.o: hakmem/%.c $(OUT)/variants.mk Makefile
	@mkdir -p $$(@D)
	$$(CC) $$(HAK_COPTS) $(HAK_MAKE_COPTS) $$(addprefix -D,$$(HAK_DEFINES_$(1))) \
	  $(HAK_INCLUDES) $$(CPPFLAGS) $$(CFLAGS) -MMD -MP -c $$< -o $$@

$$($(1)_OVERRIDE_OBJS): $(OUT)/obj/$(1)/%.o: hakmem/%.c $(OUT)/variants.mk Makefile
	@mkdir -p $$(@D)
	$$(CC) $$(HAK_COPTS) $(HAK_OVERRIDE_COPTS) $(HAK_MAKE_COPTS) \
	  $$(addprefix -D,$$(HAK_DEFINES_$(1)) $(HAK_OVERRIDE_DEFINES)) \
	  $(HAK_INCLUDES) $$(CPPFLAGS) $$(CFLAGS) -MMD -MP -c $$< -o $$@

-include $$($(1)_OBJS:.o=.d)

# The shared library: the version script keeps every internal symbol local; -z defs
# makes a reference to anything outside libc a link error (weak references of
# hak_new.c to libstdc++ are allowed).
$$($(1)_LIB).so.$(VERSION): $$($(1)_OBJS) $(MAP)
	@mkdir -p $$(@D)
	$$(CC) -shared $(HAK_MAKE_COPTS) $$(CFLAGS) $$(LDFLAGS) -o $$@ $$($(1)_OBJS) \
	  -Wl,-soname,$(call lib_of,$(1)).so.$(MAJOR) -Wl,--version-script=$(MAP) \
	  $(HAK_SHARED_LINKOPTS) -Wl,-z,defs

$$($(1)_LIB).so.$(MAJOR): $$($(1)_LIB).so.$(VERSION)
	ln -sf $$(<F) $$@

$$($(1)_LIB).so: $$($(1)_LIB).so.$(MAJOR)
	ln -sf $$(<F) $$@

# The static library: one object, internal (hidden) symbols made local.
$$($(1)_LIB).a: $$($(1)_OBJS)
	@mkdir -p $$(@D)
	$$(LD) -r -o $(OUT)/obj/$(1)/$(call lib_of,$(1)).o $$($(1)_OBJS)
	$$(OBJCOPY) --localize-hidden $(OUT)/obj/$(1)/$(call lib_of,$(1)).o
	rm -f $$@
	$$(AR) rcs $$@ $(OUT)/obj/$(1)/$(call lib_of,$(1)).o
endef
$(foreach v,$(HAK_VARIANTS),$(eval $(call variant_rules,$(v))))

# ---- install ---------------------------------------------------------------------
# Paths written into hakmem*.pc and hakmemConfig.cmake are the final ones (without
# DESTDIR), so a staged install (DESTDIR) is packaged as it will be used.
SED_VARS = -e 's|@VERSION@|$(VERSION)|g' -e 's|@MAJOR@|$(MAJOR)|g' \
  -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g'

install: all
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(CMAKEDIR)
	$(INSTALL) -m 644 hakmem/include/hakmem.h $(DESTDIR)$(INCLUDEDIR)/hakmem.h
	$(INSTALL) -m 644 $(STATIC_LIBS) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 755 $(SHARED_LIBS) $(DESTDIR)$(LIBDIR)/
	$(foreach v,$(HAK_VARIANTS),\
	  ln -sf $(call lib_of,$(v)).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(call lib_of,$(v)).so.$(MAJOR) && \
	  ln -sf $(call lib_of,$(v)).so.$(MAJOR) $(DESTDIR)$(LIBDIR)/$(call lib_of,$(v)).so && \
	  sed $(SED_VARS) -e 's|@VARIANT@|$(v)|g' -e 's|@SUFFIX@|$(HAK_SUFFIX_$(v))|g' mk/hakmem.pc.in \
	    > $(DESTDIR)$(PKGCONFIGDIR)/hakmem$(HAK_SUFFIX_$(v)).pc && ) true
	sed $(SED_VARS) -e 's|@VARIANTS@|$(HAK_VARIANTS)|g' \
	  -e 's|@SUFFIXES@|$(foreach v,$(HAK_VARIANTS),"$(HAK_SUFFIX_$(v))")|g' \
	  mk/hakmemConfig.cmake.in > $(DESTDIR)$(CMAKEDIR)/hakmemConfig.cmake
	sed $(SED_VARS) mk/hakmemConfigVersion.cmake.in > $(DESTDIR)$(CMAKEDIR)/hakmemConfigVersion.cmake

# Removes exactly what install put there (same PREFIX, LIBDIR, ... and DESTDIR), and the
# package directories only if nothing else is left in them.
uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/hakmem.h
	$(foreach v,$(HAK_VARIANTS),\
	  rm -f $(DESTDIR)$(LIBDIR)/$(call lib_of,$(v)).a $(DESTDIR)$(LIBDIR)/$(call lib_of,$(v)).so \
	    $(DESTDIR)$(LIBDIR)/$(call lib_of,$(v)).so.$(MAJOR) $(DESTDIR)$(LIBDIR)/$(call lib_of,$(v)).so.$(VERSION) \
	    $(DESTDIR)$(PKGCONFIGDIR)/hakmem$(HAK_SUFFIX_$(v)).pc && ) true
	rm -f $(DESTDIR)$(CMAKEDIR)/hakmemConfig.cmake $(DESTDIR)$(CMAKEDIR)/hakmemConfigVersion.cmake
	-rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null

check-install:
	bash ci/install_consumers.sh

# The lists this build took from variants.bzl and its own additions, one per line, for
# ci/make_config_check.py.
print-config:
	@echo "copts: $(HAK_COPTS)"
	@echo "core_srcs: $(HAK_CORE_SRCS)"
	@echo "variants: $(HAK_VARIANTS)"
	@$(foreach v,$(HAK_VARIANTS),echo "suffix_$(v): $(HAK_SUFFIX_$(v))"; echo "defines_$(v): $(HAK_DEFINES_$(v))";)
	@echo "override_srcs: $(HAK_OVERRIDE_SRCS)"
	@echo "override_copts: $(HAK_OVERRIDE_COPTS)"
	@echo "override_defines: $(HAK_OVERRIDE_DEFINES)"
	@echo "shared_linkopts: $(HAK_SHARED_LINKOPTS)"
	@echo "version: $(VERSION)"
	@echo "major: $(MAJOR)"

clean:
	rm -rf $(OUT)
