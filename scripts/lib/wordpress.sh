# shellcheck shell=bash
# lib/wordpress.sh — talking to WordPress through its own HTTP interface,
# for scripts/appimages.sh --verify and scripts/demo.sh. Sourced, never run.
# The caller defines wp PATH [CURL-ARGS…]: one request to the site (its
# redirects followed), printing the body.

# wp_install TITLE USER PASSWORD: WordPress's installer, step 2 (the form
# wp-admin/install.php posts); fails with what it said unless it succeeded.
wp_install() {
  local out
  out=$(wp "/wp-admin/install.php?step=2" --data-urlencode "weblog_title=$1" --data-urlencode "user_name=$2" \
    --data-urlencode "admin_password=$3" --data-urlencode "admin_password2=$3" -d pw_weak=1 \
    -d admin_email=admin@example.org -d blog_public=0) || return 1
  case $out in
    *'Success!'*) ;;
    *) echo "install.php step 2: $(echo "$out" | sed 's/<[^>]*>//g' | grep . | head -5)" >&2; return 1 ;;
  esac
}

# wp_publish USER PASSWORD TITLE CONTENT: a published post through XML-RPC
# (wp.newPost); prints its ID. TITLE and CONTENT are plain text without
# XML's special characters.
wp_publish() {
  local call out id
  call=$(printf '<?xml version="1.0"?><methodCall><methodName>wp.newPost</methodName><params>%s%s%s%s</params></methodCall>' \
    '<param><value><int>1</int></value></param>' \
    "<param><value><string>$1</string></value></param>" "<param><value><string>$2</string></value></param>" \
    "<param><value><struct><member><name>post_title</name><value><string>$3</string></value></member><member><name>post_content</name><value><string>$4</string></value></member><member><name>post_status</name><value><string>publish</string></value></member></struct></value></param>")
  out=$(wp /xmlrpc.php -H 'Content-Type: text/xml' --data-binary "$call") || return 1
  id=$(echo "$out" | sed -n 's:.*<string>\([0-9]*\)</string>.*:\1:p')
  [ -n "$id" ] || { echo "wp.newPost: $out" >&2; return 1; }
  echo "$id"
}

# wp_has_post ID TITLE: the post's page (/?p=ID, then its permalink) shows TITLE.
wp_has_post() {
  local out
  out=$(wp "/?p=$1") || return 1
  case $out in *"$2"*) ;; *) return 1 ;; esac
}
