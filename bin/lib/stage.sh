# Building courier's installable files in a staging directory. Source this file.
#
# stage_courier PG_CONFIG OUT_DIR
#   Builds the release library with `cargo pgrx package` and lays out under OUT_DIR, at the paths
#   PG_CONFIG reports, every file a PostgreSQL needs for courier: the library, the control file,
#   the generated install script of the current version, the upgrade scripts from sql/, and the
#   frozen install scripts of released versions (sql/courier--X.Y.Z.sql), so that `CREATE
#   EXTENSION courier VERSION 'X.Y.Z'` works for every released version.
stage_courier() {
    local pg_config="$1" out="$2"
    rm -rf "$out"
    # SOURCE_DATE_EPOCH is for dating package files (bin/package), not for the build: pgrx-pg-sys's
    # build script reruns when it changes, which would rebuild the library between bin/install and
    # bin/package of the same commit.
    env -u SOURCE_DATE_EPOCH cargo pgrx package --pg-config "$pg_config" --out-dir "$out" >&2
    local extdir="$out$("$pg_config" --sharedir)/extension"
    [ -f "$out$("$pg_config" --pkglibdir)/courier.so" ] || { echo "stage_courier: no courier.so in $out" >&2; return 1; }
    local frozen
    for frozen in sql/courier--*.sql; do
        case "$(basename "$frozen")" in
            courier--*--*.sql) ;;                  # upgrade scripts: cargo pgrx copied them
            *) install -m 644 "$frozen" "$extdir/" ;;
        esac
    done
}

# install_staged OUT_DIR
#   Copies a staged tree into / the way a package manager does: each file is written next to its
#   destination and renamed over it, so a running server keeps the library it mapped (a copy over
#   the same file would change the pages under it) and every file changes at once.
install_staged() {
    local out="$1" rel dest
    (cd "$out" && find . -type f) | while read -r rel; do
        dest="/${rel#./}"
        install -d "$(dirname "$dest")"
        install -m 644 "$out/$rel" "$dest.courier-new"
        mv -f "$dest.courier-new" "$dest"
    done
}
