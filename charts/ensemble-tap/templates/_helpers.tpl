{{- define "tap.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Always <release>-ensemble-tap (also for a release named "ensemble-tap…"): the names
scripts/bootstrap.sh and scripts/smoke-onboarding.sh address the Services by.
*/}}
{{- define "tap.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tap.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "tap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tap.selector" -}}
app.kubernetes.io/name: {{ include "tap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tap.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest pins the image */}}
{{- define "tap.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The port of one "host[:port]" (IPv6 in brackets), or the default when it has none. A value the
chart cannot read (a ${VAR} placeholder, no host) fails the render: a NetworkPolicy built from a
guessed port would drop the connection in production.
Arguments: dict "hostport" "default" "key" (the config key) "value" (as written).
*/}}
{{- define "tap.port" -}}
{{- $hp := .hostport -}}
{{- if or (contains "$" .value) (not $hp) -}}
{{- fail (printf "networkPolicy: %s %q has no host and port the chart can read; write the address in config (secrets stay in existingSecret), or set networkPolicy.egressFromConfig=false and give the rules in networkPolicy.extraEgress" .key .value) -}}
{{- else if or (regexMatch "^\\[[^\\]]+\\]:[0-9]+$" $hp) (regexMatch "^[^:\\[\\]]+:[0-9]+$" $hp) -}}
{{- regexFind "[0-9]+$" $hp -}}
{{- else if or (regexMatch "^\\[[^\\]]+\\]$" $hp) (regexMatch "^[^:\\[\\]]+$" $hp) -}}
{{- .default -}}
{{- else -}}
{{- fail (printf "networkPolicy: %s %q is not host[:port]" .key .value) -}}
{{- end -}}
{{- end -}}

{{/* The port of a URL: its own, else the scheme's default (defaults: dict scheme -> port). */}}
{{- define "tap.urlPort" -}}
{{- $value := trim .value -}}
{{- $host := "" -}}
{{- $scheme := "" -}}
{{- if and (not (contains "$" $value)) (contains "://" $value) -}}
{{- $u := urlParse $value -}}
{{- $host = $u.host -}}
{{- $scheme = lower $u.scheme -}}
{{- end -}}
{{- include "tap.port" (dict "hostport" $host "default" (get .defaults $scheme | default .fallback) "key" .key "value" $value) -}}
{{- end -}}

{{/*
Egress ports, comma-separated: those of config.nats.url (default 4222; ws 80, wss 443),
config.clickhouse.addr (default 8123, 8443 with secure), config.vault.address (its port, else
80/443), and for pollers (a provider or tenant in a poll mode) 443 plus the ports written in
base_url/token_url: the SaaS APIs.
*/}}
{{- define "tap.egressPorts" -}}
{{- $ports := list -}}
{{- $cfg := .Values.config -}}
{{- $nats := (($cfg.nats | default dict).url) | default "" -}}
{{- range $url := splitList "," $nats -}}
{{- $ports = append $ports (include "tap.urlPort" (dict "value" $url "key" "config.nats.url" "defaults" (dict "ws" "80" "wss" "443") "fallback" "4222")) -}}
{{- end -}}
{{- $ch := $cfg.clickhouse | default dict -}}
{{- if $ch.addr -}}
{{- range $entry := splitList "," $ch.addr -}}
{{- $ports = append $ports (include "tap.port" (dict "hostport" (trim $entry) "default" (ternary "8443" "8123" (not (not $ch.secure))) "key" "config.clickhouse.addr" "value" (trim $entry))) -}}
{{- end -}}
{{- end -}}
{{- $vault := ($cfg.vault | default dict).address | default "" -}}
{{- if $vault -}}
{{- $ports = append $ports (include "tap.urlPort" (dict "value" $vault "key" "config.vault.address" "defaults" (dict "https" "443") "fallback" "80")) -}}
{{- end -}}
{{- range $name, $provider := ($cfg.providers | default dict) -}}
{{- $entries := list ($provider | default dict) -}}
{{- range $tenant := (($provider | default dict).tenants | default dict) -}}
{{- $entries = append $entries ($tenant | default dict) -}}
{{- end -}}
{{- if contains "poll" (toString (($provider | default dict).mode | default "webhook")) -}}
{{- $ports = append $ports "443" -}}
{{- range $entry := $entries -}}
{{- range $key := list "base_url" "token_url" -}}
{{- $url := toString (get $entry $key | default "") -}}
{{- if and $url (not (contains "$" $url)) -}}
{{- $ports = append $ports (include "tap.urlPort" (dict "value" $url "key" (printf "config.providers.%s.%s" $name $key) "defaults" (dict "http" "80") "fallback" "443")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $ports | uniq | join "," -}}
{{- end -}}
