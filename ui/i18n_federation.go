package ui

// The messages of federation: what a hub does to sites, as its audit log
// names it. catalogs merges them in.

func federationEN() map[string]string {
	return map[string]string{
		"action.federation.":              "All federation actions",
		"action.federation.token.create":  "Create a site enrolment token",
		"action.federation.site.revoke":   "Revoke a site",
		"action.federation.join":          "Join this site to a federation hub",
		"action.federation.leave":         "Leave the federation hub",
		"action.federation.grant":         "Give a hub user a role on sites",
		"action.federation.site.group":    "Put a site in a group",
		"action.federation.site.call":     "Call a site's API through the hub",
		"action.federation.intent.create": "Queue a bulk operation on sites",
		"action.federation.image.upload":  "Upload an image for sites",
		"action.federation.image.push":    "Push an image to sites",
	}
}

func federationZH() map[string]string {
	return map[string]string{
		"action.federation.":              "所有联邦操作",
		"action.federation.token.create":  "创建站点注册令牌",
		"action.federation.site.revoke":   "吊销站点",
		"action.federation.join":          "将此站点加入联邦中心",
		"action.federation.leave":         "退出联邦中心",
		"action.federation.grant":         "授予中心用户站点角色",
		"action.federation.site.group":    "为站点分组",
		"action.federation.site.call":     "通过中心调用站点 API",
		"action.federation.intent.create": "为站点排队批量操作",
		"action.federation.image.upload":  "为站点上传镜像",
		"action.federation.image.push":    "向站点推送镜像",
	}
}
