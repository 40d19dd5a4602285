# shellcheck shell=bash disable=SC2154,SC2034,SC2016  # T: the associative array demo.sh declares and reads
# The texts of `scripts/demo.sh --class` in English: sourced into the associative array T.
# Keys with %s are printf formats. Another language overrides the keys it translates
# (scripts/lesson/vi.sh); a key it lacks falls back to this English one.
# Keep the tokens "ok:" / "FAIL:" out of these texts: demo.sh prints them itself.

T[usage]='usage: scripts/demo.sh                                   the layer demo (needs root or /dev/fuse)
       scripts/demo.sh --class [--yes] [--lang en|vi]    the lesson, step by step (needs root)
  --class  images, layers, containers, copy-up, whiteout, opaque, redirect, commit,
           each claim checked; waits for Enter between steps (docs/teaching.md)
  --yes    run unattended: no waiting
  --lang   en (default) or vi'
T[bad_arg]='scripts/demo.sh: unknown argument %s'
T[bad_lang]='scripts/demo.sh: no texts for --lang %s (scripts/lesson/%s.sh)'
T[class_only]='scripts/demo.sh: --yes and --lang go with --class'
T[need_root]='scripts/demo.sh --class needs root (it mounts FUSE and writes trusted.* xattrs): run it with sudo'
T[need_python]='scripts/demo.sh --class needs python3 (it builds the image archive with it)'

T[title]='stratafs: Docker images and containers, layer by layer'
T[intro]='Eight steps. Every command is shown after "$" before its output; "trace>" lines come
from `stratafs trace`, running in the background from step 3; each claim the lesson
makes is checked and printed as "ok: ...".'
T[workdir]='Working in %s. ./store is our /var/lib/docker; `stratafs` below runs %s with STRATAFS_STORE=./store.'
T[getfattr_standin]='(getfattr is not installed: a python3 stand-in prints the same; apt-get install attr for the real one)'
T[enter]='[Enter: next step, Ctrl-C: stop] '
T[step]='Step %s/8: %s'
T[cmd_failed]='this command failed: %s'
T[trace_none]='trace> (no new event)'
T[no_tracing]='stratafs trace did not say "tracing" within 10 s'
T[no_event]='the trace did not show %s within 10 s'
T[all_done]='All %s checks passed. Cleaning up: the mounts, the trace and %s go away.'

# Step 1
T[s1_title]='An image is a stack of layers'
T[s1_text]='An image is a list of layers plus a config. Each layer is a tar of the files one build
step changed. We write a 3-layer image archive (what `docker save` writes), import it
into a private store and look inside: store/overlay2/ is Docker'"'"'s /var/lib/docker/overlay2.'
T[s1_history]='One line per build step, the newest on top. <missing>: the image of an older step
is not on this machine, only its layer (docker history shows the same).'
T[s1_vars]='L1, L2, L3: the layers'"'"' directories, bottom first (the "Dir" of stratafs image inspect):'
T[s1_store]='Each layer is a directory: diff/ holds its files, link its short name (l/NAME is a
symlink to its diff/, so that mount options stay short), lower the layers below it,
topmost first. The bottom layer has no lower. L3'"'"'s diff/ holds only what its RUN changed:
the new motd and a whiteout (c) for the deleted /usr/share/doc.'

# Step 2
T[s2_title]='Two containers from one image share its layers'
T[s2_text]='A container is one more layer on top of the image: an empty, writable diff/. Creating
it copies nothing: both containers name the same image layers in their lower file.
Mounting one is overlayfs with lowerdir=the image'"'"'s layers, upperdir=the container'"'"'s diff/.'
T[s2_mount]='The mount options Docker builds from lower (and what explain/tree read below):'

# Step 3
T[s3_text]='Image layers are read-only. The first time a container writes to a file of a layer, the
whole file is copied into the container'"'"'s diff/ (copy-up), then changed there. We watch
it live with `stratafs trace`. A second write goes to the copy already in diff/.'
T[s3_title]='The first write copies up, the second does not'
T[s3_first]='COPY-UP etc/motd: its data came from lower 1 = L3, the top layer, whose motd we see.
Its directory etc/ came up first, metadata only: the file needs a parent in diff/.'
T[s3_second]='The second write copied nothing: no new event, the copy-up counters did not move.
c1 now has its own motd; c2 and the image layer still have the old one.'

# Step 4
T[s4_title]='Deleting a file of the image leaves a whiteout'
T[s4_text]='A container cannot delete from a read-only layer. Instead it puts a whiteout into its
diff/: a character device 0/0 with the same name, which hides the file below. The
layer still has the file, and c2 still sees it.'

# Step 5
T[s5_title]='rm -rf dir && mkdir dir: an opaque directory'
T[s5_text]='The new directory is made in diff/ and marked opaque (xattr trusted.overlay.opaque=y):
"do not look into the layers below". So the old files stay hidden without a whiteout
each, and the new directory starts empty.'

# Step 6
T[s6_title]='mv dir: a redirect'
T[s6_text]='Renaming a directory of the image would mean copying all of it up. Instead the new
name gets a directory in diff/ with the xattr trusted.overlay.redirect naming the old
path, and the old name a whiteout. The files stay in the image layer: nothing is copied.
(Kernel overlayfs does this with redirect_dir=on; without it mv gets EXDEV and copies.)'

# Step 7
T[s7_title]='The container'"'"'s layer holds only the changes'
T[s7_text]='All the container did is in its diff/: a copied-up file, a new file, whiteouts, an
opaque and a redirected directory. The tree marks each entry with its layer (U = c1'"'"'s
diff/, 1 = L3 ... 3 = L1, ~ = hidden). `stratafs diff`, like `docker diff`, reads diff/
as A (added), C (changed) and D (deleted).'
T[s7_diff]='D /app/cache: the old directory is gone, and what the new one holds is A.
D /app/data + A /app/store: the rename. c2 changed nothing.'

# Step 8
T[s8_title]='docker commit: the changes become a new layer'
T[s8_text]='commit turns c1'"'"'s diff/ into a layer tar (whiteouts become .wh. entries) and makes a
new image: the old layers plus this one. history shows it on top; the store has one
more layer directory, whose lower is the image'"'"'s layers. A container of the new image
starts with our changes.'
T[s8_vars]='L4: the new layer'"'"'s directory (the last "Dir" of stratafs image inspect lesson/app:2):'

# The checks ("ok: ..." lines)
T[c_history]='image history lists the 3 build steps'
T[c_layers]='each layer is overlay2/<id>/ with diff/ and link, and l/<link> points to its diff/'
T[c_lower]='each layer'"'"'s lower names the layers below it, topmost first; the bottom one has none'
T[c_same_view]='c1 and c2 see the same files'
T[c_same_lower]='c1 and c2 have the same lower: the image'"'"'s 3 layers, L3 first'
T[c_empty]='both containers'"'"' diff/ are empty'
T[c_copyup_ev]='the trace shows the COPY-UP of etc/motd'
T[c_stats_one]='stats: one data copy-up (%s B: the image'"'"'s motd), plus %s directory (metadata only)'
T[c_stats_same]='stats: the second write copied nothing (copy-ups still %s, %s B)'
T[c_old_motd]='c2 and layer L3 keep the old motd; c1'"'"'s has both new lines'
T[c_one_copyup]='after two writes the trace has exactly one COPY-UP of etc/motd, and no event from the second write'
T[c_whiteout_ev]='the trace shows WHITEOUT app/plugins/b.so'
T[c_whiteout_dev]='diff/app/plugins/b.so is a character device 0/0'
T[c_hidden]='b.so is gone from c1, and still in c2 and in layer L2'
T[c_opaque_ev]='the trace shows OPAQUE app/cache'
T[c_opaque_x]='diff/app/cache has trusted.overlay.opaque=y'
T[c_opaque_view]='c1'"'"'s app/cache holds only the new file'
T[c_opaque_explain]='stratafs explain calls app/cache opaque'
T[c_redirect_ev]='the trace shows REDIRECT app/store'
T[c_redirect_x]='diff/app/store has trusted.overlay.redirect=%s'
T[c_redirect_view]='app/store/users.db reads through the redirect, and was not copied into diff/'
T[c_redirect_wh]='diff/app/data is a whiteout (character device 0/0)'
T[c_upper]='diff/ holds exactly the 9 changed entries'
T[c_diff]='stratafs diff c1 prints the expected A/C/D lines'
T[c_diff_c2]='stratafs diff c2 prints nothing'
T[c_hist_top]='history of lesson/app:2: the commit on top, its comment, above the 3 old steps'
T[c_new_layer]='the new layer is store/overlay2/<id>/ with diff/ and link, and its lower is c1'"'"'s'
T[c_c3]='a container of lesson/app:2 starts with the changes'
T[enter_end]='[Enter: clean up and end] '
